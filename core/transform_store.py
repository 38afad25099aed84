"""Published tf.Transform outputs under ``<root>/transforms/`` and the CURRENT pointer.

A transform directory ``<root>/transforms/<fingerprint>/`` is complete when its COMPLETE marker
exists (written last, after transform_fn/, transformed_metadata/ and metadata/schema.pbtxt).
``<root>/transforms/CURRENT`` names the fingerprint ``ctpipe stream`` and the unbounded graph
apply. Readers here need no TensorFlow.
"""
from __future__ import annotations

import os
from typing import Optional

from core import layout, storage
from core.errors import IntegrityError, StorageError

COMPLETE_MARKER = layout.TRANSFORM_COMPLETE
CURRENT_POINTER = layout.TRANSFORM_CURRENT
transform_dir = layout.transform_dir


CHECKSUMS_FILE = "CHECKSUMS.json"
"""sha256 and size of every file of a published transform, written before COMPLETE."""


def tree_checksums(directory: str) -> dict:
    """{relative path: {"sha256", "bytes"}} of every file below ``directory`` (any file system),
    the markers excluded."""
    import hashlib

    prefix = (os.path.abspath(directory) if storage.is_local(directory) else directory).rstrip("/") + "/"
    out = {}
    for path in storage.glob(prefix + "**"):
        rel = path[len(prefix):]
        if rel in (COMPLETE_MARKER, CHECKSUMS_FILE):
            continue
        data = storage.read_bytes(path)
        out[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return dict(sorted(out.items()))


def verify_copy(local_dir: str, fingerprint: str) -> None:
    """Check a copy of transform ``fingerprint`` against its CHECKSUMS.json before anything
    loads it (a SavedModel is executable code): every listed file present and equal, nothing
    else added. Raises IntegrityError naming the first difference."""
    path = os.path.join(local_dir, CHECKSUMS_FILE)
    if not os.path.exists(path):
        raise IntegrityError(f"transform {fingerprint} at {local_dir} has no {CHECKSUMS_FILE}, so it cannot be "
                             "verified before loading; republish it with `ctpipe backfill`")
    expected = storage.read_json(path)["files"]
    actual = tree_checksums(local_dir)
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            raise IntegrityError(f"transform {fingerprint}: {rel} is missing from {local_dir}")
        if rel not in expected:
            raise IntegrityError(f"transform {fingerprint}: {rel} in {local_dir} is not part of the published "
                                 "transform (added after publication)")
        if actual[rel] != expected[rel]:
            raise IntegrityError(f"transform {fingerprint}: {rel} in {local_dir} does not match its recorded "
                                 f"sha256 {expected[rel]['sha256']}; the stored transform was modified or is "
                                 "corrupt: republish it with `ctpipe backfill`")


def write_checksums(target: str, fingerprint: str) -> None:
    storage.write_json_atomic(storage.join(target, CHECKSUMS_FILE),
                              {"fingerprint": fingerprint, "files": tree_checksums(target)})


def asset_checksums(root: str, fingerprint: str) -> Optional[dict]:
    """{path: checksum} of the assets (vocabularies) of published transform ``fingerprint``, from
    its CHECKSUMS.json; None when it is not published with checksums."""
    path = storage.join(transform_dir(root, fingerprint), CHECKSUMS_FILE)
    if not is_published(root, fingerprint) or not storage.exists(path):
        return None
    files = storage.read_json(path)["files"]
    return {rel: value for rel, value in files.items() if rel.startswith("transform_fn/assets/")}


def is_published(root: str, fingerprint: str) -> bool:
    return storage.exists(storage.join(transform_dir(root, fingerprint), COMPLETE_MARKER))


def current_transform(root: str) -> Optional[str]:
    """Fingerprint named by <root>/transforms/CURRENT (the newest published transform), or None.

    The pointer only names a transform whose directory is complete (COMPLETE marker present);
    a pointer to anything else is a corrupt store and raises StorageError.
    """
    pointer = layout.transform_pointer(root)
    if not storage.exists(pointer):
        return None
    fingerprint = storage.read_bytes(pointer).decode().strip()
    if not is_published(root, fingerprint):
        raise StorageError(f"{pointer} names transform {fingerprint!r}, but "
                           f"{transform_dir(root, fingerprint)} is not a complete transform; "
                           "rerun `ctpipe backfill` to publish one, or delete the pointer")
    return fingerprint


def set_current(root: str, fingerprint: str, fence=None) -> None:
    """Point CURRENT at ``fingerprint``; ``fence`` (core.lock) is checked first."""
    if fence is not None:
        fence.check_publish(f"{layout.transform_pointer(root)} -> {fingerprint}")
    storage.write_bytes_atomic(layout.transform_pointer(root), fingerprint.encode())
