"""Local, verified copies of sealed windows on object stores, for readers that need local files.

TensorFlow 2.16 has no s3:// file system (and gs:// only where TensorFlow was built with it), so
``tf.data`` cannot read a window on an object store. ``stage_windows`` copies the part files a
reader needs through core/storage.py (Beam FileSystems: s3://, gs://, the same code path as every
other access) into a local directory, checks each file's size and sha256 against the window's
manifest, and returns the windows re-rooted there. A file that does not match stops the run
(StorageError naming the file): a window is immutable once sealed, so a mismatch is corruption
or tampering, never something to train on.

Staging once and reading locally costs one download per file per run; reading straight from the
store through Beam would pay Python-level TFRecord parsing on every epoch (docs/BENCHMARKS.md,
"Training input on an object store", has both measured).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

from core import storage
from core.errors import StorageError
from core.window_store import SealedWindow

#: Files copied at once (each copy is mostly waiting on the network).
PARALLEL_COPIES = 8
_CHUNK = 1 << 20


def _copy_verified(src: str, target: str, entry: dict) -> None:
    """Copy ``src`` to the local ``target`` (temp + rename) if its size and sha256 match ``entry``."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.partial"
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            with storage.open_read(src) as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
    except StorageError:
        raise
    except Exception as exc:  # Beam wraps the cause in BeamIOError / IOError
        raise StorageError(f"cannot read {src}: {exc}") from exc
    if size != entry.get("bytes") or digest.hexdigest() != entry.get("sha256"):
        os.remove(tmp)
        raise StorageError(f"{src} does not match its window manifest ({size} bytes, sha256 {digest.hexdigest()}; "
                           f"the manifest says {entry.get('bytes')} bytes, sha256 {entry.get('sha256')}): the "
                           "sealed window was modified or is corrupt; restore it from backup or reseal it")
    os.replace(tmp, target)


def _local_window(window: SealedWindow, dest_dir: str) -> str:
    return os.path.join(dest_dir, window.window_id, f"v{window.version}")


def stage_windows(windows: Sequence[SealedWindow], dest_dir: str,
                  kinds: Iterable[str] = ("raw", "transformed")) -> list[SealedWindow]:
    """``windows`` with their ``kinds`` files copied (verified) under ``dest_dir``; windows on a
    local root are returned unchanged (nothing is copied). Files already staged are not read again."""
    kinds = tuple(kinds)
    jobs, staged = [], []
    for window in windows:
        if storage.is_local(window.path):
            staged.append(window)
            continue
        base = _local_window(window, dest_dir)
        for entry in window.manifest["files"]:
            if entry["kind"] in kinds:
                target = storage.local_target(base, entry["path"])
                if not os.path.exists(target):
                    jobs.append((storage.join(window.path, entry["path"]), target, entry))
        staged.append(dataclasses.replace(window, path=base))
    if jobs:
        with ThreadPoolExecutor(max_workers=min(PARALLEL_COPIES, len(jobs))) as pool:
            for future in [pool.submit(_copy_verified, *job) for job in jobs]:
                future.result()
    return staged
