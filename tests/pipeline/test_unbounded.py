"""What `ctpipe stream --unbounded` refuses before it submits anything (no runner, no broker)."""
from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from core.errors import ConfigError
from pipeline.cli.main import main
from pipeline.config import KafkaSourceConfig
from pipeline.unbounded import check_streaming_options
from transforms.kafka.source import ReadKafkaUnbounded


@pytest.mark.parametrize("flags, match", [
    ([], "needs a streaming runner"),
    (["--runner=DirectRunner", "--streaming"], "not DirectRunner"),
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


@pytest.mark.slow  # ~50 s on the loaded shared machine (the CLI's Beam options and stores set-up)
def test_the_command_exits_2_on_the_direct_runner(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"storage": {"root": str(tmp_path / "root")},
                                  "source": {"kafka": {"bootstrap_servers": "127.0.0.1:9", "topic": "ev"}}}))
    assert main(["stream", "--unbounded", "--config", str(config), "--runner-config", "runner_configs/direct.yaml"]) == 2
    assert "needs a streaming runner" in capsys.readouterr().err
