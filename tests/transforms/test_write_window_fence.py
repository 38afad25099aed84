"""transforms.write_window under the storage root's lease: a writer whose fence is stale
publishes nothing (no part file, no MANIFEST); the current holder's write goes through."""
from __future__ import annotations

import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from core import window_store
from core.errors import FencedError
from core.lock import StorageLock
from transforms.write_window import WindowContent, write_window

WID = "20261127T0100Z"


def _content(examples=(b"a", b"b")) -> WindowContent:
    return WindowContent(window_id=WID, window_size_s=3600, raw_examples=tuple(examples),
                         transformed_examples=tuple(examples), stats=statistics_pb2.DatasetFeatureStatisticsList(),
                         anomalies=anomalies_pb2.Anomalies(), verdict="PASS", reasons=(), dead_letters=0,
                         sources=(), schema_version=1, transform_fingerprint="f", code_version="test")


def test_a_stale_fence_publishes_no_file_of_the_window(tmp_path):
    root = str(tmp_path)
    old = StorageLock(root).acquire()
    stale = old.fence()
    old.release()
    new = StorageLock(root).acquire()
    try:
        with pytest.raises(FencedError, match=f"refusing to publish window {WID} v1"):
            write_window(root, _content(), fence=stale)
        assert not os.path.exists(window_store.window_dir(root, WID, 1))
        assert write_window(root, _content(), fence=new.fence()) == (WID, 1, True)
        assert window_store.latest_sealed(root, WID).manifest["record_count"] == 2
    finally:
        new.release()


def test_a_takeover_between_the_parts_and_the_manifest_leaves_the_version_unsealed(tmp_path, monkeypatch):
    """The second check sits right before the MANIFEST: parts written under a lease lost
    meanwhile stay invisible (no MANIFEST), and the next holder's write seals the window."""
    from core import storage

    root = str(tmp_path)
    holder = StorageLock(root).acquire()
    fence = holder.fence()
    real_write = storage.write_bytes_atomic
    taken = []

    def write_then_lose_the_lease(path, data):
        real_write(path, data)
        if path.endswith("anomalies.pbtxt") and not taken:  # the last part before the manifest
            holder.release()
            taken.append(StorageLock(root).acquire())

    monkeypatch.setattr(storage, "write_bytes_atomic", write_then_lose_the_lease)
    try:
        with pytest.raises(FencedError):
            write_window(root, _content(), fence=fence)
        assert os.path.exists(os.path.join(window_store.window_dir(root, WID, 1), "anomalies.pbtxt"))
        assert window_store.latest_sealed(root, WID) is None  # not sealed: invisible to readers
        monkeypatch.setattr(storage, "write_bytes_atomic", real_write)
        assert write_window(root, _content(), fence=taken[0].fence()) == (WID, 1, True)
    finally:
        taken[0].release()
