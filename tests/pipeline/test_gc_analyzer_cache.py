"""``ctpipe gc`` and the analyzer cache (core/analysis_cache.py): entries of window versions that
are gone, or that the same collection removes, go (ENTRY.json first); the others stay. No
TensorFlow or Beam pipeline: about a second."""
from __future__ import annotations

import os
import tempfile

import pytest
import yaml

from core import analysis_cache, layout, storage
from pipeline.config import load_config
from pipeline.gc import run_gc

W0, W1, W2 = "20261127T0000Z", "20261127T0100Z", "20261127T0200Z"


def _seal(root: str, wid: str, version: int) -> dict:
    manifest = {"window_id": wid, "version": version, "validation": {"verdict": "PASS"},
                "files": [{"path": "raw-00000.tfrecord.gz", "kind": "raw", "sha256": f"{wid}{version}", "bytes": 1}]}
    storage.write_json_atomic(os.path.join(layout.window_dir(root, wid, version), layout.MANIFEST), manifest)
    return manifest


def _entry(root: str, tmp_path, manifest: dict) -> str:
    staged = tmp_path / "staged" / analysis_cache.entry_key(manifest)
    staged.mkdir(parents=True)
    (staged / "MANIFEST").write_bytes(b"m")
    (staged / "0-00000-of-00001.gz").write_bytes(b"accumulator")
    analysis_cache.publish_entry(root, "k1", analysis_cache.entry_key(manifest), str(staged))
    return analysis_cache.entry_key(manifest)


def test_gc_removes_cache_entries_of_windows_that_are_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # driver temp dirs: only this test's
    root = str(tmp_path / "store")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({
        "storage": {"root": root}, "source": {"files": {"uri": str(tmp_path / "none" / "*.jsonl")}},
        "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"},
        "retention": {"keep_superseded_versions": 0, "superseded_after": "0s", "scratch_after": "0s"}}))
    config = load_config(str(config_path))
    keep0 = _entry(root, tmp_path, _seal(root, W0, 1))
    old1 = _entry(root, tmp_path, _seal(root, W1, 1))          # superseded by v2 below: this gc removes v1
    keep1 = _entry(root, tmp_path, _seal(root, W1, 2))
    gone2 = _entry(root, tmp_path, {"window_id": W2, "version": 1, "files": []})   # never sealed (or deleted)
    stranger = os.path.join(layout.analyzer_cache_dir(root, "k1"), "not-an-entry")
    os.makedirs(stranger)
    open(os.path.join(stranger, "file"), "w").close()

    dry = run_gc(config, dry_run=True)
    planned = {(i["kind"], i["path"]) for i in dry["would_delete"]}
    assert {p for k, p in planned if k == "analyzer_cache"} == {
        layout.analyzer_cache_entry(root, "k1", e) for e in (old1, gone2)}
    assert all(analysis_cache.check_entry(root, "k1", e) is None for e in (keep0, old1, keep1, gone2))

    run_gc(config)
    left = sorted(os.listdir(layout.analyzer_cache_dir(root, "k1")))
    assert left == sorted([keep0, keep1, "not-an-entry"])
    assert analysis_cache.check_entry(root, "k1", keep0) is None and analysis_cache.check_entry(root, "k1", keep1) is None
    assert not [i for i in run_gc(config)["deleted"] if i["kind"] == "analyzer_cache"]


def test_an_interrupted_removal_leaves_an_untrusted_entry_that_the_next_gc_removes(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = str(tmp_path / "store")
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump({
        "storage": {"root": root}, "source": {"files": {"uri": str(tmp_path / "none" / "*.jsonl")}},
        "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"}}))
    config = load_config(str(config_path))
    gone = _entry(root, tmp_path, {"window_id": W2, "version": 1, "files": []})
    real = storage.delete_tree
    monkeypatch.setattr(storage, "delete_tree", lambda prefix: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError, match="crash"):
        run_gc(config)
    monkeypatch.setattr(storage, "delete_tree", real)
    assert os.path.isdir(layout.analyzer_cache_entry(root, "k1", gone))    # its files are still there,
    assert "unfinished write" in analysis_cache.check_entry(root, "k1", gone)  # but it is no longer trusted
    run_gc(config)
    assert not os.path.exists(layout.analyzer_cache_entry(root, "k1", gone))
