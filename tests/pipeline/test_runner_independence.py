"""Workers that cannot see the driver's disk: a backfill and a stream cycle still complete.

On Flink TaskManagers or a Beam worker pool, workers run on other machines; nothing may pass
between them and the driver through local files. Here the workers are separate processes
(DirectRunner multi_processing), each started in its own mount namespace with an empty tmpfs
over the driver's temp dir (TMPDIR): a worker writing a result "for the driver" into a temp file,
or reading an artifact the driver staged there, fails. Results must come back through the
storage root and artifacts must be loaded by storage URI.
"""
from __future__ import annotations

import json
import os
import stat
import sys
import tempfile

import pytest

from core import window_store
from pipeline.backfill import run_backfill
from pipeline.config import config_from_dict
from pipeline.options import pipeline_options
from pipeline.stream import run_stream
from transforms.kafka.produce import produce

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def isolated_workers(tmp_path, monkeypatch):
    """DirectRunner options with two worker processes that each see an empty, private tmpfs at
    the driver's temp dir. Returns (options, driver_tmp)."""
    driver_tmp = tmp_path / "driver-tmp"
    driver_tmp.mkdir()
    wrapper = tmp_path / "isolated-python"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# Beam starts each SDK worker as `<sys.executable> -m apache_beam.runners.worker.sdk_worker_main`.\n"
        f"echo $$ >> {tmp_path / 'workers.log'}\n"
        f"exec unshare --mount --propagation private /bin/sh -c "
        f"'mount -t tmpfs ctpipe-worker-tmp \"$CTPIPE_DRIVER_TMP\" && exec \"$0\" \"$@\"' "
        f"{sys.executable} \"$@\"\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("CTPIPE_DRIVER_TMP", str(driver_tmp))
    monkeypatch.setenv("TMPDIR", str(driver_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # the driver's tempfile follows TMPDIR
    monkeypatch.setattr(sys, "executable", str(wrapper))
    options = pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml"),
                               ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    return options, driver_tmp


def _workers_started(tmp_path) -> int:
    log = tmp_path / "workers.log"
    return len(log.read_text().split()) if log.exists() else 0


def _sealed_ids(window) -> list:
    import tensorflow as tf

    return sorted(tf.train.Example.FromString(r).features.feature["id"].bytes_list.value[0].decode()
                  for r in tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP")
                  .as_numpy_iterator())


def test_isolation_is_real(isolated_workers, tmp_path):
    """The harness itself: a file in the driver's temp dir is invisible inside a worker's view."""
    import subprocess

    _options, driver_tmp = isolated_workers
    (driver_tmp / "from-driver").write_text("x")
    out = subprocess.run([sys.executable, "-c", f"import os; print(os.listdir({str(driver_tmp)!r}))"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_backfill_and_stream_cycle_with_isolated_workers(isolated_workers, tmp_path, make_events, kafka_broker,
                                                         kafka_topic):
    options, driver_tmp = isolated_workers
    events_glob, gen = make_events(hours=2, rows_per_hour=120)
    gen.valid_set = set(gen.valid_ids)
    root = str(tmp_path / "store")
    config = config_from_dict({"storage": {"root": root}, "source": {"files": {"uri": events_glob}},
                               "window": {"size": "1h", "allowed_lateness": "0s"}})
    result = run_backfill(config, options, None, None)
    sealed = window_store.list_sealed(root)
    assert [w.window_id for w in sealed] == ["20261127T0000Z", "20261127T0100Z"]
    assert [(w["window_id"], w["version"], w["written"]) for w in result.record["windows"]] == [
        (w.window_id, w.version, True) for w in sealed]
    assert sorted(i for w in sealed for i in _sealed_ids(w)) == sorted(gen.valid_ids)
    assert _workers_started(tmp_path) >= 2  # the graphs really ran in isolated worker processes

    # one stream cycle on a second root: schema inference, ingest, seal (analyze + apply)
    lines = [line for path in sorted(os.listdir(os.path.dirname(events_glob)))
             for line in open(os.path.join(os.path.dirname(events_glob), path), "rb").read().splitlines()]
    produce(kafka_broker.client_kwargs, kafka_topic, ((None, line) for line in lines), partitions=2)
    stream_root = str(tmp_path / "stream")
    stream_config = config_from_dict({
        "storage": {"root": stream_root}, "window": {"size": "1h", "allowed_lateness": "0s"},
        "source": {"kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic}}})
    cycles = run_stream(stream_config, options, cycles=1)
    assert cycles[0].records == len(lines)
    assert [w["window_id"] for w in cycles[0].sealed] == ["20261127T0000Z"]
    streamed = window_store.latest_sealed(stream_root, "20261127T0000Z")
    first_hour = sorted(json.loads(line)["id"] for line in lines
                        if line.startswith(b"{") and b'"ts": "2026-11-27T00' in line and _is_valid(line, gen))
    assert _sealed_ids(streamed) == first_hour


def _is_valid(line: bytes, gen) -> bool:
    try:
        return json.loads(line)["id"] in gen.valid_set
    except (ValueError, KeyError, TypeError):
        return False
