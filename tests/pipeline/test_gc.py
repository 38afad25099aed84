"""``ctpipe gc``: the dry run lists exactly what nothing references, gc removes it (a kill -9
midway leaves a consistent store, the next gc finishes), a rerun is a no-op, and training and
backfills work on the collected store. Stream parts: unreferenced in the checkpoint first, and a
late record for a collected window goes to the side output."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest
import yaml
from apache_beam.pvalue import TaggedOutput

from core import layout, storage, window_store
from core.records import Event
from pipeline.checkpoint import Checkpoint, CheckpointStore
from pipeline.config import load_config
from pipeline.gc import run_gc
from transforms.kafka.source import OffsetRange, source_uri

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T0 = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
T0_MS = int(T0.timestamp() * 1000)
HOUR_MS = 3_600_000


def _files(root: str) -> set:
    """Every file of the store but the root's lease (gc takes it, dry run included: docs/LEASE.md)."""
    out = {os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs}
    return {p for p in out if not p.startswith("locks" + os.sep)}


def _reaped_pid() -> int:
    """The pid of a process that has exited (and been waited for)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _write_config(path, root, events_glob, registry, **retention) -> str:
    path.write_text(yaml.safe_dump({
        "storage": {"root": root},
        "source": {"files": {"uri": events_glob}},
        "registry": {"uri": registry, "model_name": "sensors"},
        "training": {"epochs": 1, "backup_dir": str(path.parent / "backup")},
        # labels here are independent of the features: production's AUC on a window is chance, and
        # the collapse screening (AUC < 0.3 quarantines) would drop a window now and then; it is
        # tested in test_poisoned_data and the screening tests, not here
        "gate": {"thresholds": [{"metric": "example_count", "lower_bound": 1}], "screening": {"enabled": False}},
        "retention": {"keep_superseded_versions": 0, "superseded_after": "0s", "scratch_after": "0s",
                      "dead_letters": "30d", **retention},
    }))
    return str(path)


def _late_file(directory, name: str, n: int) -> None:
    with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
        for i in range(n):
            ts = (T0 + dt.timedelta(minutes=5 + i)).isoformat().replace("+00:00", "Z")
            handle.write(json.dumps({"id": f"{name}-{i}", "ts": ts, "device_id": "dev-001", "firmware": "v1",
                                     "temperature": 55.0, "vibration": 1.0, "humidity": 40.0,
                                     "label": i % 2}) + "\n")


def _gc_cli(config: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "gc", "--config", config, "--json", *extra],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


@pytest.mark.slow
def test_gc_lists_removes_survives_kill_9_and_leaves_a_store_that_trains(make_events, direct_options, tmp_path):
    from pipeline.backfill import run_backfill
    from pipeline.controller import run_training

    events_glob, _ = make_events(hours=2, rows_per_hour=150)
    events_dir = os.path.dirname(events_glob)
    root, registry = str(tmp_path / "store"), str(tmp_path / "registry")
    config_path = _write_config(tmp_path / "ctpipe.yaml", root, events_glob, registry)
    config = load_config(config_path)
    w0, w1 = layout.window_id(T0_MS), layout.window_id(T0_MS + HOUR_MS)

    run_backfill(config, direct_options, None, None)
    first = run_training(config)
    assert first["pushed"] and [(w["window_id"], w["version"]) for w in first["windows"]] == [(w0, 1), (w1, 1)]
    for name in ("late-a.jsonl", "late-b.jsonl"):  # two late files: new versions of the windows
        _late_file(events_dir, name, 5)
        run_backfill(config, direct_options, None, None)
    versions = [(w.window_id, w.version, w.path) for w in window_store.list_sealed(root, latest_only=False)]
    newest = {wid: v for wid, v, _ in versions}  # sorted by (window, version): the last one wins
    lineage = {(w["window_id"], w["version"]) for w in first["windows"]}
    superseded = {path for wid, v, path in versions if v != newest[wid] and (wid, v) not in lineage}
    assert newest[w0] == 3 and len(superseded) >= 1  # w0 v2 at least: superseded, in no lineage

    # leftovers of crashes: a run's scratch without a run record, a dead process's temp dir, old dead letters
    crashed = "20261101T000000Z-backfill-dead01"
    storage.write_bytes_atomic(storage.join(layout.run_scratch_dir(root, crashed), "tft", "x.bin"), b"x")
    storage.write_bytes_atomic(storage.join(layout.deadletter_dir(root, "20200101"), "old.jsonl"), b"{}\n")
    system_tmp = tmp_path / "system-tmp"
    driver_tmp = system_tmp / f"ctpipe-{_reaped_pid()}-abcd1234"
    (driver_tmp / "beam").mkdir(parents=True)
    (driver_tmp / "beam" / "artifact").write_bytes(b"x")
    env = {**os.environ, "TMPDIR": str(system_tmp), "PYTHONPATH": REPO}

    runs = layout.runs_dir(root)
    run_dirs = sorted(d for d in os.listdir(runs) if os.path.isdir(os.path.join(runs, d)))
    assert run_dirs and all(os.path.exists(os.path.join(runs, f"{d}.json")) for d in run_dirs)
    expected = ({("superseded_version", path) for path in superseded}
                | {("run_outputs", os.path.join(runs, d)) for d in run_dirs}
                | {("run_scratch", layout.run_scratch_dir(root, crashed)),
                   ("dead_letters", layout.deadletter_dir(root, "20200101")),
                   ("driver_temp", str(driver_tmp))})

    before = _files(root)
    dry = _gc_cli(config_path, env, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    report = json.loads(dry.stdout)
    assert {(i["kind"], i["path"]) for i in report["would_delete"]} == expected
    kept = {(k["kind"], k["path"]): k["reason"] for k in report["kept"]}
    assert "lineage of sensors v1" in kept[("superseded_version", layout.window_dir(root, w0, 1))]
    assert _files(root) == before and driver_tmp.exists()  # a dry run removes nothing

    # kill -9 gc right after it unpublished the first version (MANIFEST gone, files still there)
    victim = report["would_delete"][0]
    assert victim["kind"] == "superseded_version"
    killer = ("import os, signal, sys\nfrom core import storage\n"
              "storage.delete_tree = lambda prefix: os.kill(os.getpid(), signal.SIGKILL)\n"
              "from pipeline.cli.main import main\n"
              f"sys.exit(main(['gc', '--config', {config_path!r}]))\n")
    killed = subprocess.run([sys.executable, "-c", killer], cwd=REPO, env=env, capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    v2 = victim["path"]
    assert not os.path.exists(os.path.join(v2, layout.MANIFEST)) and os.listdir(v2)  # unpublished, not yet gone
    # consistent: every visible version is whole, listing and `windows list` work
    visible = [w.path for w in window_store.list_sealed(root, latest_only=False)]
    assert visible == [path for _, _, path in versions if path != v2]
    for window in window_store.list_sealed(root, latest_only=False):
        assert all(os.path.exists(os.path.join(window.path, f["path"])) for f in window.manifest["files"])
    listed = subprocess.run([sys.executable, "-m", "pipeline.cli", "windows", "list", "--json", "--config",
                             config_path], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert listed.returncode == 0 and [(r["window_id"], r["version"]) for r in json.loads(listed.stdout)] == sorted(
        newest.items())

    # the killed gc left its own temp dir behind too: a dead process's, for the next gc
    dead_dirs = {("driver_temp", str(p)) for p in system_tmp.iterdir() if p.name.startswith("ctpipe-")}
    assert len(dead_dirs) == 2
    done = _gc_cli(config_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    removed = {(i["kind"], i["path"]) for i in json.loads(done.stdout)["deleted"]}
    assert removed == (expected - {("superseded_version", v2)}) | {("unpublished_version", v2)} | dead_dirs
    assert not os.path.exists(v2) and not driver_tmp.exists()
    assert not os.path.exists(layout.run_scratch_dir(root, crashed))
    remaining = {(w.window_id, w.version) for w in window_store.list_sealed(root, latest_only=False)}
    assert remaining == lineage | set(newest.items())  # production's lineage and each newest version
    assert not [d for d in os.listdir(runs) if os.path.isdir(os.path.join(runs, d))]
    again = _gc_cli(config_path, env)
    assert again.returncode == 0 and json.loads(again.stdout)["deleted"] == []  # a rerun is a no-op

    # the collected store still trains and backfills
    second = run_training(config)
    assert second["pushed"] and [(w["window_id"], w["version"]) for w in second["windows"]] == sorted(newest.items())
    before_w0 = window_store.latest_sealed(root, w0)
    _late_file(events_dir, "late-c.jsonl", 5)
    run_backfill(config, direct_options, None, None)
    after_w0 = window_store.latest_sealed(root, w0)
    assert after_w0.version == before_w0.version + 1
    assert after_w0.manifest["record_count"] == before_w0.manifest["record_count"] + 5


# --------------------------------------------------------------------------- stream parts


def _fake_sealed(root: str, wid: str) -> None:
    storage.write_json_atomic(os.path.join(layout.window_dir(root, wid, 1), layout.MANIFEST),
                              {"window_id": wid, "version": 1, "validation": {"verdict": "PASS"}, "files": []})


def test_gc_of_stream_parts_unreferences_in_the_checkpoint_first(tmp_path, monkeypatch):
    from transforms import pending

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # driver temp dirs: only this test's
    root = str(tmp_path / "store")
    config_path = _write_config(tmp_path / "c.yaml", root, str(tmp_path / "none" / "*.jsonl"),
                                str(tmp_path / "registry"), pending_parts="2h")
    data = yaml.safe_load(open(config_path))
    data["source"]["kafka"] = {"bootstrap_servers": "127.0.0.1:1", "topic": "sensors"}
    yaml.safe_dump(data, open(config_path, "w"))
    config = load_config(config_path)
    store = CheckpointStore(root, "sensors")
    sid = store.source_id
    wids = [layout.window_id(T0_MS + h * HOUR_MS) for h in range(5)]
    for h, wid in enumerate(wids):
        rng = OffsetRange("sensors", 0, h * 10, h * 10 + 10)
        storage.write_bytes_atomic(pending.part_path(root, sid, wid, rng), pending.encode_part([]))
        storage.write_json_atomic(pending.dead_index_path(root, sid, wid, rng), {"dead_letters": []})
    for wid in wids[:2] + wids[3:4]:
        _fake_sealed(root, wid)
    # watermark at 05:00: windows ending at or before 03:00 are 2 h behind; 02:00 is not sealed
    store.save(Checkpoint(topic="sensors", offsets={0: 50}, watermark_ms=T0_MS + 5 * HOUR_MS))

    dry = run_gc(config, dry_run=True)
    assert [(i["kind"], i["path"]) for i in dry["would_delete"]] == [
        ("pending_parts", storage.join(layout.pending_dir(root, sid), wid)) for wid in wids[:2]]
    assert ("pending_parts", storage.join(layout.pending_dir(root, sid), wids[2])) in {
        (k["kind"], k["path"]) for k in dry["kept"]}
    assert store.load().parts_collected_before_ms is None

    # a crash after the checkpoint was updated and before any part went is consistent: the
    # horizon is recorded, the parts are still there, and the next gc removes them
    monkeypatch.setattr(storage, "delete_tree", lambda prefix: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        run_gc(config)
    assert store.load().parts_collected_before_ms == T0_MS + 3 * HOUR_MS
    assert set(pending.list_parts(root, sid)) == set(wids)
    monkeypatch.undo()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_gc(config)
    assert set(pending.list_parts(root, sid)) == set(wids[2:])
    assert run_gc(config)["deleted"] == []

    # a late record for a collected window goes to the side output; for a kept one, to pending/
    settings = pending.PartSettings(root, sid, 3600, T0_MS + 5 * HOUR_MS, pending.NEW_VERSION, "20261127",
                                    store.load().parts_collected_before_ms)
    dofn = pending._KeyEventDoFn(settings, (OffsetRange("sensors", 0, 50, 60),))
    dofn.setup()
    dofn.start_bundle()
    for h in (1, 3):
        assert list(dofn.process(Event(f"e{h}", T0_MS + h * HOUR_MS + 1, {}, source_uri("sensors", 0),
                                       str(50 + h)))) == []  # buffered into its part's chunk
    keys = [out.value[0] for out in dofn.finish_bundle() if not isinstance(out, TaggedOutput)]
    sides = {wid: side for (wid, *_range, side) in keys}
    assert sides == {layout.window_id(T0_MS + HOUR_MS): True, layout.window_id(T0_MS + 3 * HOUR_MS): False}


def test_gc_does_not_run_while_a_writer_holds_the_root_lease(tmp_path, monkeypatch):
    """A stream cycle (or a backfill, a train's push) holds the root's lease: gc refuses to run
    meanwhile (or waits, with --lock-timeout) instead of deleting under a writer."""
    from core.errors import LockError
    from core.lock import StorageLock

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = str(tmp_path / "store")
    config = load_config(_write_config(tmp_path / "c.yaml", root, str(tmp_path / "none" / "*.jsonl"),
                                       str(tmp_path / "registry"), pending_parts="0s"))
    store = CheckpointStore(root, "sensors")
    store.save(Checkpoint(topic="sensors", offsets={0: 5}, watermark_ms=T0_MS + 5 * HOUR_MS))
    before = sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs)
    with StorageLock(root):
        with pytest.raises(LockError, match="stream|held"):
            run_gc(config, dry_run=False)
    after = sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs)
    assert [p for p in before if p not in after] == []
