"""A Beam job server that does not answer (not started, wrong CTPIPE_BEAM_JOB_ENDPOINT) is one line
naming the runner config's job_endpoint and exit code 2, not an internal error with a traceback."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import grpc
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from core.errors import EXIT_CONFIG
from pipeline.options import explain_runner_error

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_job_server_timeout_names_the_endpoint_and_the_runner_config():
    options = PipelineOptions(["--runner=FlinkRunner", "--job_endpoint=10.0.0.7:8099", "--job_server_timeout=7"])
    try:
        try:
            raise grpc.FutureTimeoutError()
        except grpc.FutureTimeoutError as inner:
            raise RuntimeError("wrapped by the runner") from inner
    except RuntimeError as exc:
        err = explain_runner_error(exc, options, "runner_configs/flink.yaml")
    assert err is not None and err.exit_code == EXIT_CONFIG
    assert str(err).startswith("Beam's job server at 10.0.0.7:8099 (job_endpoint of runner config "
                               "'runner_configs/flink.yaml') did not answer within 7 s (job_server_timeout)")
    # Anything else, or options without a job server, is left to the caller.
    assert explain_runner_error(ValueError("other"), options, "x.yaml") is None
    assert explain_runner_error(grpc.FutureTimeoutError(), PipelineOptions([]), "x.yaml") is None


@pytest.mark.slow  # the CLI in a subprocess: Beam's imports and the 3 s wait (~15 s)
def test_backfill_against_a_job_server_that_is_not_there(tmp_path, make_events):
    events, _ = make_events(hours=1, rows_per_hour=20)
    with open(os.path.join(REPO, "runner_configs", "flink-local.yaml"), encoding="utf-8") as fh:
        runner = yaml.safe_load(fh)
    runner["job_server_timeout"] = 3  # the real config waits 120 s
    runner_path = tmp_path / "flink-local.yaml"
    runner_path.write_text(yaml.safe_dump(runner))
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"storage": {"root": str(tmp_path / "root")}, "source": {"files": {"uri": events}}}))
    endpoint = f"127.0.0.1:{_closed_port()}"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "--config", str(config),
                           "--runner-config", str(runner_path)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "CTPIPE_FLINK_MASTER": endpoint, "CTPIPE_BEAM_JOB_ENDPOINT": endpoint},
                          timeout=600)
    assert proc.returncode == EXIT_CONFIG, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"ctpipe: error: Beam's job server at {endpoint} (job_endpoint of runner config "
                     f"'{runner_path}') did not answer within 3 s (job_server_timeout); start it (locally: "
                     "`bash scripts/services.sh start beam-job-server`, then CTPIPE_BEAM_JOB_ENDPOINT from "
                     "`bash scripts/services.sh env`) or fix the address"], lines
    assert not os.path.exists(tmp_path / "root" / "windows")
