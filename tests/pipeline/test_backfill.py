"""End-to-end backfill on DirectRunner against a local storage root."""
import glob
import hashlib
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from core import window_store
from pipeline.backfill import run_backfill
from tests._stores import read_ids_with_schema, tree_digest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    """One backfill of 3 hours, reused by the read-only checks below."""
    import datetime as dt

    from pipeline import synthetic
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    base = tmp_path_factory.mktemp("bf")
    stats = synthetic.write_jsonl(str(base / "events"), synthetic.generate(dt.datetime(2026, 11, 27), 3, 400),
                                  rows_per_hour=403)
    config = config_from_dict({"storage": {"root": str(base / "store")},
                               "source": {"files": {"uri": str(base / "events" / "*.jsonl")}}})
    options = pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml"))
    result = run_backfill(config, options, None, None)
    return config, options, stats, result, base


def test_every_valid_id_exactly_once_via_tf_data(backfilled):
    config, _options, stats, _result, _base = backfilled
    ids = read_ids_with_schema(config.storage.root)
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(stats.valid_ids)


def test_dead_letters_carry_reason_raw_and_position(backfilled):
    config, _options, stats, result, _base = backfilled
    lines = [json.loads(line) for path in glob.glob(os.path.join(config.storage.root, "deadletter", "*", "*.jsonl"))
             for line in open(path, encoding="utf-8")]
    assert len(lines) == stats.malformed
    assert {d["reason"] for d in lines} == {"bad_json", "not_utf8", "missing_id", "bad_event_time", "type_mismatch"}
    for dead in lines:
        assert dead["source"].endswith(".jsonl") and dead["position"].isdigit()
        assert dead["raw_utf8"] is not None or dead["raw_hex"]
    counters = result.record["counters"]
    assert sum(v for k, v in counters.items() if k.startswith("deadletter:")) == stats.malformed


def test_manifest_is_complete_and_checksums_match(backfilled):
    config, *_ = backfilled
    windows = window_store.list_sealed(config.storage.root)
    assert [w.window_id for w in windows] == ["20261127T0000Z", "20261127T0100Z", "20261127T0200Z"]
    for window in windows:
        m = window.manifest
        assert m["schema_version"] == 1 and len(m["transform_fingerprint"]) == 16
        assert m["validation"]["verdict"] == "PASS", m["validation"]["reasons"]
        on_disk = sorted(set(os.listdir(window.path)) - {"MANIFEST.json"})
        assert sorted(f["path"] for f in m["files"]) == on_disk == [
            "anomalies.pbtxt", "data-00000-of-00001.tfrecord.gz", "provenance.json.gz",
            "raw-00000-of-00001.tfrecord.gz", "stats.pb"]
        assert sorted(f["kind"] for f in m["files"]) == ["anomalies", "provenance", "raw", "stats", "transformed"]
        for f in m["files"]:
            with open(os.path.join(window.path, f["path"]), "rb") as handle:
                data = handle.read()
            assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
        assert os.path.exists(os.path.join(config.storage.root, "transforms", m["transform_fingerprint"], "COMPLETE"))


def test_stats_are_readable_by_tfdv(backfilled):
    import tensorflow_data_validation as tfdv

    config, *_ = backfilled
    window = window_store.list_sealed(config.storage.root)[0]
    stats = tfdv.load_stats_binary(os.path.join(window.path, "stats.pb"))
    import numpy as np

    temps = [tf.train.Example.FromString(r).features.feature["temperature"].float_list.value[0] for r in
             tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP").as_numpy_iterator()]
    assert stats.datasets[0].num_examples == len(temps)
    feature = next(f for f in stats.datasets[0].features if f.path.step[0] == "temperature")
    assert feature.num_stats.mean == pytest.approx(float(np.mean(temps)), rel=1e-6)


def test_rerun_same_root_is_a_no_op_and_fresh_root_is_byte_identical(backfilled, tmp_path):
    config, options, _stats, _result, _base = backfilled
    before = tree_digest(config.storage.root)
    again = run_backfill(config, options, None, None)
    assert all(not w["written"] for w in again.record["windows"])
    assert tree_digest(config.storage.root) == before
    # A second store from scratch: every window file and manifest byte-identical.
    fresh = config.replace(storage=config.storage.__class__(root=str(tmp_path / "fresh")))
    run_backfill(fresh, options, None, None)
    assert tree_digest(fresh.storage.root) == before


def test_new_data_for_a_sealed_window_makes_a_new_version(backfilled, tmp_path):
    config, options, _stats, _result, base = backfilled
    before = window_store.latest_sealed(config.storage.root, "20261127T0100Z")
    before_ids = _raw_ids(before)
    late = base / "events" / "late-0000.jsonl"
    late.write_text(json.dumps({"id": "late-1", "ts": "2026-11-27T01:30:00Z", "device_id": "dev-001",
                                "firmware": "v2", "temperature": 61.0, "vibration": 1.0, "humidity": 40.0,
                                "label": 0}) + "\n")
    try:
        result = run_backfill(config, options, None, None)
    finally:
        late.unlink()
    written = {w["window_id"]: w for w in result.record["windows"] if w["written"]}
    # The published transform is applied (not analyzed again), so only the window that received
    # the record gets a v2, holding one more record, transformed as before.
    assert {(wid, w["version"]) for wid, w in written.items()} == {("20261127T0100Z", 2)}
    assert result.record["transform"] == {"fingerprint": before.manifest["transform_fingerprint"], "analyzed": False}
    v2 = window_store.latest_sealed(config.storage.root, "20261127T0100Z")
    assert v2.version == 2 and v2.manifest["supersedes"] == 1
    assert os.path.exists(os.path.join(config.storage.root, "windows", "20261127T0100Z", "v1", "MANIFEST.json"))
    assert _raw_ids(v2) == sorted(before_ids + ["late-1"])
    assert v2.manifest["record_count"] == before.manifest["record_count"] + 1


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=600)


def _error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ctpipe:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_cli_bad_config_one_line_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window:\n  sizee: 1h\n")
    proc = run_cli("backfill", "--config", str(cfg))
    assert proc.returncode == 2
    assert "window.sizee" in _error_line(proc)
    assert "Traceback" not in proc.stderr


def test_cli_missing_input_exit_3(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  root: {tmp_path}/store\nsource:\n  files:\n    uri: {tmp_path}/none/*.jsonl\n")
    proc = run_cli("backfill", "--config", str(cfg))
    assert proc.returncode == 3
    assert "no input files match" in _error_line(proc)


def test_cli_corrupt_file_exit_3_and_no_window_visible(tmp_path, make_events):
    events_glob, _stats = make_events(hours=2, rows_per_hour=50)
    folder = os.path.dirname(events_glob)
    with open(os.path.join(folder, "zz-corrupt.jsonl.gz"), "wb") as handle:
        handle.write(b"\x1f\x8b\x08\x00" + os.urandom(2000))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  root: {tmp_path}/store\nsource:\n  files:\n    uri: '{folder}/*.jsonl*'\n")
    proc = run_cli("backfill", "--config", str(cfg))
    assert proc.returncode == 3, proc.stderr[-3000:]
    line = _error_line(proc)
    assert "zz-corrupt.jsonl.gz" in line and "corrupt" in line
    assert window_store.list_sealed(str(tmp_path / "store")) == []


def test_a_range_that_cuts_a_window_is_refused_with_the_aligned_bounds():
    """--from inside a window would seal that window's next version from part of its records."""
    from core.errors import ConfigError
    from pipeline.backfill import check_range_is_whole_windows

    hour = 3_600_000
    t0 = 1795737600000  # 2026-11-27T00:00Z
    check_range_is_whole_windows(t0, t0 + 2 * hour, 3600)
    check_range_is_whole_windows(None, None, 3600)
    with pytest.raises(ConfigError, match=r"--from 2026-11-27T00:30:00Z cuts a 3600s window.*"
                                          r"--from 2026-11-27T00:00:00Z or --from 2026-11-27T01:00:00Z"):
        check_range_is_whole_windows(t0 + hour // 2, None, 3600)
    with pytest.raises(ConfigError, match="--to 2026-11-27T01:00:01Z cuts"):
        check_range_is_whole_windows(t0, t0 + hour + 1000, 3600)


def _raw_ids(window) -> list:
    """Ids held by a sealed window, read from its raw TFRecords with tf.data (not ctpipe's code)."""

    return sorted(tf.train.Example.FromString(r).features.feature["id"].bytes_list.value[0].decode()
                  for r in tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP")
                  .as_numpy_iterator())


def test_kill_9_while_windows_wait_staged_shows_nothing_partial_and_a_rerun_seals_the_same_bytes(backfilled,
                                                                                              tmp_path):
    """A backfill killed (SIGKILL) while a window's rows wait as staged files between stages
    (transforms/window_parts.py): every visible window is whole, the run's staged files stay in
    its scratch directory only, a rerun seals exactly the windows a clean run sealed (same bytes)
    and removes its own scratch, and ``gc`` removes the killed run's."""
    import shutil
    import signal

    from core import layout
    from pipeline.config import config_from_dict
    from pipeline.gc import run_gc

    _config, options, _stats, _result, base = backfilled
    shutil.copytree(base / "events", tmp_path / "events")  # other tests add to the module's input
    root = str(tmp_path / "killed")
    doc = {"storage": {"root": root}, "source": {"files": {"uri": str(tmp_path / "events" / "*.jsonl")}},
           "retention": {"scratch_after": "0s"}}
    child = ("import json, os, signal, sys\n"
             "import pipeline\n"
             "from transforms import window_parts\n"
             "from pipeline.backfill import run_backfill\n"
             "from pipeline.config import config_from_dict\n"
             "from pipeline.options import pipeline_options\n"
             "put, seen = window_parts.WindowParts.with_part, []\n"
             "def with_part(self, name, data):\n"
             "    if name == window_parts.TRANSFORMED:\n"
             "        seen.append(name)\n"
             "        if len(seen) == 2:\n"
             "            os.kill(os.getpid(), signal.SIGKILL)\n"
             "    return put(self, name, data)\n"
             "window_parts.WindowParts.with_part = with_part\n"
             f"config = config_from_dict(json.loads({json.dumps(json.dumps(doc))}))\n"
             f"run_backfill(config, pipeline_options({os.path.join(REPO, 'runner_configs', 'direct.yaml')!r}), "
             "None, None)\n")
    killed = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    for window in window_store.list_sealed(root, latest_only=False):
        for entry in window.manifest["files"]:
            with open(os.path.join(window.path, entry["path"]), "rb") as handle:
                assert hashlib.sha256(handle.read()).hexdigest() == entry["sha256"]
    staged = glob.glob(os.path.join(layout.scratch_root(root), "*", "staged", "*", "*"))
    assert staged, "the killed run staged nothing"
    assert not [p for p in glob.glob(os.path.join(root, "windows", "**", "*"), recursive=True)
                if p.endswith((".chunk", ".arrow", ".bin"))]
    killed_runs = set(os.listdir(layout.scratch_root(root)))

    config_killed = config_from_dict(doc)
    rerun = run_backfill(config_killed, options, None, None)
    clean = config_from_dict({**doc, "storage": {"root": str(tmp_path / "clean")}})
    run_backfill(clean, options, None, None)
    assert tree_digest(root) == tree_digest(clean.storage.root)
    assert set(os.listdir(layout.scratch_root(root))) == killed_runs  # the rerun removed its own
    assert rerun.run_id not in killed_runs
    report = run_gc(config_killed)
    assert {(i["kind"], i["path"]) for i in report["deleted"]} >= {
        ("run_scratch", layout.run_scratch_dir(root, run)) for run in killed_runs}
    assert not os.listdir(layout.scratch_root(root))


def test_every_core_runner_config_seals_the_same_windows_and_dead_letters(backfilled, tmp_path):
    """runner_configs/direct-multiprocess.yaml (DirectRunner, one SDK worker process per core)
    seals every window file and manifest byte for byte as the one-process default, and writes the
    same dead letters."""
    from pipeline.options import pipeline_options

    config, options, _stats, _result, base = backfilled
    roots = {}
    for name, runner in (("one", options), ("every", pipeline_options(os.path.join(
            REPO, "runner_configs", "direct-multiprocess.yaml")))):
        store = config.replace(storage=config.storage.__class__(root=str(tmp_path / name)))
        run_backfill(store, runner, None, None)
        dead = sorted(line for path in glob.glob(str(tmp_path / name / "deadletter" / "**" / "*.jsonl"), recursive=True)
                      for line in open(path, encoding="utf-8"))
        roots[name] = (tree_digest(store.storage.root), dead)
    assert roots["every"] == roots["one"] and roots["one"][0] and roots["one"][1]


class _DieAtFirstTransformedPart:
    """A forked worker's start (``ForkedWorkerHandler.target``): the first worker to put a
    window's transformed part (of any run: ``flag`` is created once) is killed with SIGKILL first."""

    def __init__(self, flag: str):
        self.flag = flag

    def __call__(self, environment):
        import signal

        from pipeline import forked_workers
        from transforms import window_parts

        put, flag = window_parts.WindowParts.with_part, self.flag

        def with_part(parts, name, data):
            if name == window_parts.TRANSFORMED:
                try:
                    os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            return put(parts, name, data)

        window_parts.WindowParts.with_part = with_part
        forked_workers._serve(environment)


def test_a_worker_killed_mid_backfill_on_every_core_shows_nothing_partial_and_a_rerun_seals_the_same_bytes(
        backfilled, tmp_path, monkeypatch):
    """direct-multiprocess.yaml: one SDK worker is killed (SIGKILL) as it puts a window's
    transformed part. The run fails naming the worker and the signal, every visible window is
    whole, and a rerun on every core seals the same bytes as a clean one-process run."""
    import shutil

    from pipeline import forked_workers
    from pipeline.options import pipeline_options

    config, options, _stats, _result, base = backfilled
    shutil.copytree(base / "events", tmp_path / "events")
    every = pipeline_options(os.path.join(REPO, "runner_configs", "direct-multiprocess.yaml"))
    killed = config.replace(storage=config.storage.__class__(root=str(tmp_path / "killed")),
                            source=config.source.replace(files=config.source.files.replace(
                                uri=str(tmp_path / "events" / "*.jsonl"))))
    clean = killed.replace(storage=config.storage.__class__(root=str(tmp_path / "clean")))
    monkeypatch.setattr(forked_workers.ForkedWorkerHandler, "target",
                        _DieAtFirstTransformedPart(str(tmp_path / "killed-once")))
    with pytest.raises(RuntimeError, match=r"SDK worker worker_\d+ \(pid \d+\) was killed by signal 9"):
        run_backfill(killed, every, None, None)
    assert os.path.exists(tmp_path / "killed-once")
    for window in window_store.list_sealed(killed.storage.root, latest_only=False):
        for entry in window.manifest["files"]:
            with open(os.path.join(window.path, entry["path"]), "rb") as handle:
                assert hashlib.sha256(handle.read()).hexdigest() == entry["sha256"]
    run_backfill(killed, every, None, None)  # the flag exists: no worker is killed this time
    run_backfill(clean, options, None, None)
    assert tree_digest(killed.storage.root) == tree_digest(clean.storage.root)
