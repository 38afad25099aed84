"""A window quarantined by the gate after sealing (QUARANTINE.json), and its release. Cost: < 1 s."""
from __future__ import annotations

import pytest

from core import storage, window_store
from core.errors import StorageError
from core.layout import window_dir
from pipeline.windows_ops import quarantine_window, release_window

WID = "20261127T0600Z"


@pytest.fixture
def root(tmp_path):
    path = storage.join(window_dir(str(tmp_path), WID, 1), "MANIFEST.json")
    storage.write_json_atomic(path, {"window_id": WID, "version": 1,
                                     "validation": {"verdict": "PASS", "reasons": []}})
    return str(tmp_path)


def test_quarantine_then_release(root):
    manifest_before = storage.read_bytes(storage.join(window_dir(root, WID, 1), "MANIFEST.json"))
    window = window_store.latest_sealed(root, WID)
    assert window.usable_for_training
    quarantine_window(root, window, ["production collapses: AUC 0.12"], by="test", evidence={"production_auc": 0.12})
    window = window_store.latest_sealed(root, WID)
    assert window.verdict == "QUARANTINED" and not window.usable_for_training
    assert window.reasons == ["production collapses: AUC 0.12"]
    assert [w.window_id for w in window_store.list_sealed(root) if not w.usable_for_training] == [WID]
    # the manifest stays immutable
    assert storage.read_bytes(storage.join(window_dir(root, WID, 1), "MANIFEST.json")) == manifest_before
    with pytest.raises(StorageError, match="already QUARANTINED"):
        quarantine_window(root, window, ["again"], by="test", evidence={})
    record = release_window(root, WID, "labels checked with the vendor", "alice")
    assert record["reasons"] == ["production collapses: AUC 0.12"]
    window = window_store.latest_sealed(root, WID)
    assert window.usable_for_training and window.released
    with pytest.raises(StorageError, match="already released"):
        quarantine_window(root, window, ["again"], by="test", evidence={})


def test_a_lost_lease_writes_no_quarantine(root):
    class Lost:
        def check_publish(self, what):
            raise RuntimeError(f"lease lost before {what}")

    with pytest.raises(RuntimeError, match="quarantine of window"):
        quarantine_window(root, window_store.latest_sealed(root, WID), ["x"], by="t", evidence={}, fence=Lost())
    assert window_store.latest_sealed(root, WID).verdict == "PASS"
