"""Warm start under training.analyze_range (pipeline/controller.warm_start_compatibility): another
range's transform is compatible only with byte-identical vocabularies. Published transforms are
faked with their CHECKSUMS.json; nothing is trained (the test body takes milliseconds; importing
pipeline.controller loads Beam)."""
from __future__ import annotations

from core import storage
from core.transform_store import CHECKSUMS_FILE, COMPLETE_MARKER, transform_dir
from pipeline.config import config_from_dict
from pipeline.controller import warm_start_compatibility


def _publish(root: str, fingerprint: str, vocab_sha: str) -> None:
    target = transform_dir(root, fingerprint)
    storage.write_json_atomic(storage.join(target, CHECKSUMS_FILE), {"fingerprint": fingerprint, "files": {
        "transform_fn/saved_model.pb": {"sha256": fingerprint, "bytes": 1},        # differs per range
        "transform_fn/assets/device_id": {"sha256": vocab_sha, "bytes": 10}}})
    storage.write_bytes_atomic(storage.join(target, COMPLETE_MARKER), fingerprint.encode())


def test_warm_start_rules(tmp_path):
    root = str(tmp_path / "store")
    ranged = config_from_dict({"storage": {"root": root}, "training": {"analyze_range": True}})
    plain = config_from_dict({"storage": {"root": root}})
    _publish(root, "prod", "v1")
    _publish(root, "same-vocab", "v1")
    _publish(root, "other-vocab", "v2")
    lineage = {"transform_fingerprint": "prod"}
    assert warm_start_compatibility(plain, lineage, "prod")["compatible"]
    assert not warm_start_compatibility(plain, lineage, "same-vocab")["compatible"]
    assert warm_start_compatibility(ranged, lineage, "same-vocab")["compatible"]
    other = warm_start_compatibility(ranged, lineage, "other-vocab")
    assert not other["compatible"] and "other vocabularies" in other["reason"]
    gone = warm_start_compatibility(ranged, {"transform_fingerprint": "collected"}, "same-vocab")
    assert not gone["compatible"] and "not published" in gone["reason"]
