"""Storage root access through Beam FileSystems (local paths, s3://, gs://).

All writes that readers may observe are atomic: content goes to a temporary sibling first and is
renamed into place (os.rename locally; on object stores the final object appears in one PUT/copy).
Layout (shared/DESIGN.md):

    <root>/windows/<window_id>/v<N>/   part files, stats.pb, anomalies.pbtxt, MANIFEST.json
    <root>/checkpoints/<source_id>.json
    <root>/deadletter/<date>/...
    <root>/schema/v<N>/schema.pbtxt
    <root>/transforms/<fingerprint>/
    <root>/runs/<run_id>.json
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Iterable

from apache_beam.io.filesystems import FileSystems

from pipeline.errors import StorageError


def join(base: str, *parts: str) -> str:
    path = base
    for part in parts:
        path = FileSystems.join(path, part)
    return path


def is_local(path: str) -> bool:
    return "://" not in path


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    # object stores have no directories


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def read_bytes(path: str) -> bytes:
    try:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            return handle.read()
    except Exception as exc:  # Beam wraps the real cause in BeamIOError / IOError
        raise StorageError(f"cannot read {path}: {exc}") from exc


def read_json(path: str) -> dict:
    data = read_bytes(path)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise StorageError(f"{path} is not valid JSON ({exc}); it was written by something else "
                           "or is corrupt: restore it from backup or remove it") from exc


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` so that readers see either no file or the whole file."""
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    makedirs(parent)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp, compression_type="uncompressed") as handle:
        handle.write(data)
    FileSystems.rename([tmp], [path])


def dumps_json(obj) -> bytes:
    """Canonical JSON (sorted keys) so identical content gives identical bytes."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, dumps_json(obj))


def glob(pattern: str) -> list[str]:
    """Paths matching ``pattern`` (sorted); a pattern with no match gives []."""
    result = FileSystems.match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def delete(paths: Iterable[str]) -> None:
    paths = [p for p in paths if exists(p)]
    if paths:
        FileSystems.delete(paths)


def copy_tree(src_dir: str, dst_dir: str) -> list[str]:
    """Copy every file below ``src_dir`` (a local dir) to ``dst_dir``; returns the relative names."""
    names = []
    for base, _dirs, files in os.walk(src_dir):
        for name in files:
            full = os.path.join(base, name)
            rel = os.path.relpath(full, src_dir).replace(os.sep, "/")
            with open(full, "rb") as handle:
                write_bytes_atomic(join(dst_dir, rel), handle.read())
            names.append(rel)
    return sorted(names)


def download_tree(src_dir: str, dst_dir: str) -> str:
    """Copy a stored directory (any filesystem) to a local directory; returns dst_dir."""
    if is_local(src_dir):
        src_dir = os.path.abspath(src_dir)
    prefix = src_dir.rstrip("/") + "/"
    for path in glob(prefix + "**"):
        rel = path[len(prefix):]
        target = os.path.join(dst_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(read_bytes(path))
    return dst_dir
