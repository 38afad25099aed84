"""Published tf.Transform outputs under ``<root>/transforms/`` and the CURRENT pointer.

A transform directory ``<root>/transforms/<fingerprint>/`` is complete when its COMPLETE marker
exists (written last, after transform_fn/, transformed_metadata/ and metadata/schema.pbtxt).
``<root>/transforms/CURRENT`` names the fingerprint ``ctpipe stream`` and the unbounded graph
apply. Readers here need no TensorFlow.
"""
from __future__ import annotations

from typing import Optional

from core import layout, storage
from core.errors import StorageError

COMPLETE_MARKER = layout.TRANSFORM_COMPLETE
CURRENT_POINTER = layout.TRANSFORM_CURRENT
transform_dir = layout.transform_dir


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


def set_current(root: str, fingerprint: str) -> None:
    storage.write_bytes_atomic(layout.transform_pointer(root), fingerprint.encode())
