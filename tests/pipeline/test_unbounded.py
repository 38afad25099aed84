"""What `ctpipe stream --unbounded` refuses before it submits anything (no runner; a real broker
only where the command must get past its Kafka check)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from core.errors import ConfigError
from pipeline.cli.main import main
from pipeline.config import KafkaSourceConfig
from pipeline.unbounded import check_streaming_options, job_id_of
from transforms.kafka.source import KafkaSourceError, ReadKafkaUnbounded

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("flags, match", [
    ([], "needs a streaming runner"),
    (["--runner=DirectRunner", "--streaming"], "not DirectRunner"),
    (["--runner=pipeline.forked_workers.ForkedDirectRunner", "--streaming"], "not pipeline.forked_workers"),
    (["--runner=FlinkRunner"], "streaming: true"),
])
def test_runner_options_that_cannot_run_the_unbounded_graph_are_refused(flags, match):
    with pytest.raises(ConfigError, match=match):
        check_streaming_options(PipelineOptions(flags))


def test_a_streaming_flink_config_passes():
    check_streaming_options(PipelineOptions(["--runner=FlinkRunner", "--streaming"]))


def test_the_kafka_read_needs_an_expansion_service():
    cfg = KafkaSourceConfig(bootstrap_servers="127.0.0.1:9", topic="ev")
    with pytest.raises(ConfigError, match="source.kafka.expansion_service"):
        _ = beam.Pipeline() | ReadKafkaUnbounded(cfg)


def test_an_expansion_service_that_does_not_answer_names_the_setting():
    address = f"127.0.0.1:{_closed_port()}"
    cfg = KafkaSourceConfig(bootstrap_servers="127.0.0.1:9", topic="ev", expansion_service=address)
    with pytest.raises(KafkaSourceError, match=rf"cannot reach the Java expansion service for the Kafka read at "
                                               rf"{address} \(source\.kafka\.expansion_service; gRPC UNAVAILABLE"):
        _ = beam.Pipeline() | ReadKafkaUnbounded(cfg)


@pytest.mark.slow  # a backfill (~15 s) and the CLI
def test_the_command_reports_an_unreachable_expansion_service_in_one_line(tmp_path, make_events, kafka_broker,
                                                                           kafka_topic):
    """Past the Kafka check and the root's schema, the expansion service is the next thing the
    command talks to: one line, exit 3, no Python traceback, before anything is submitted."""
    from transforms.kafka.produce import ensure_topic

    ensure_topic(kafka_broker.client_kwargs, kafka_topic, 1)
    events, _ = make_events(hours=1, rows_per_hour=50)
    address = f"127.0.0.1:{_closed_port()}"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({
        "storage": {"root": str(tmp_path / "root")}, "registry": {"uri": str(tmp_path / "reg"), "model_name": "m"},
        "source": {"files": {"uri": events}, "kafka": {"bootstrap_servers": kafka_broker.bootstrap,
                                                       "topic": kafka_topic, "expansion_service": address}}}))
    assert main(["backfill", "--config", str(config)]) == 0  # the schema and transform the graph applies
    nothing = f"127.0.0.1:{_closed_port()}"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "stream", "--unbounded", "--config", str(config),
                           "--runner-config", "runner_configs/flink-local-streaming.yaml"], cwd=REPO,
                          env={**os.environ, "CTPIPE_FLINK_MASTER": nothing, "CTPIPE_BEAM_JOB_ENDPOINT": nothing},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ctpipe: error: cannot reach the Java expansion service"), lines
    assert f"at {address} (source.kafka.expansion_service" in lines[0]


@pytest.mark.slow  # ~50 s on the loaded shared machine (the CLI's Beam options and stores set-up)
def test_the_command_exits_2_on_the_direct_runner(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"storage": {"root": str(tmp_path / "root")},
                                  "source": {"kafka": {"bootstrap_servers": "127.0.0.1:9", "topic": "ev"}}}))
    assert main(["stream", "--unbounded", "--config", str(config), "--runner-config", "runner_configs/direct.yaml"]) == 2
    assert "needs a streaming runner" in capsys.readouterr().err


def test_the_job_id_of_portable_and_dataflow_results():
    from apache_beam.runners.portability.portable_runner import PipelineResult

    portable = PipelineResult(None, "BeamApp-x_1", None, None)
    assert job_id_of(portable) == "BeamApp-x_1"

    class Dataflow:
        def job_id(self):
            return "2026-12-02_01_00_00-123"

    assert job_id_of(Dataflow()) == "2026-12-02_01_00_00-123"
    assert job_id_of(object()) == ""
