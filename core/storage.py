"""Storage root access: local paths directly, s3:// and gs:// through Beam FileSystems.

All writes that readers may observe are atomic: content goes to a temporary sibling first and is
renamed into place (os.replace locally; on object stores the final object appears in one
PUT/copy). The layout of the paths under a root is ``core.layout``'s.

Local paths are served with ``os`` so that read-only commands (``windows list``, ``schema show``)
never import Beam; object-store paths go through Beam's FileSystems, configured by the pipeline
options the CLI registers (endpoint, credentials). Glob patterns follow Beam's rules on both:
``*`` and ``?`` stay within one path segment, ``**`` crosses segments.
"""
from __future__ import annotations

import json
import os
import re
import uuid
from typing import Iterable

from core.errors import StorageError

_GLOB_CHARS = re.compile(r"[*?\[]")


def _filesystems(path: str = ""):
    """What serves ``path``: Beam's FileSystems, or for s3:// its S3 file system with one boto3
    client per thread (core/beam_s3.py), configured with the same pipeline options."""
    from apache_beam.io.filesystems import FileSystems

    if path.startswith("s3://"):
        from core.beam_s3 import shared_s3_filesystem

        return shared_s3_filesystem(FileSystems._pipeline_options)
    return FileSystems


def is_local(path: str) -> bool:
    return "://" not in path


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base, *parts)
    path = base
    for part in parts:
        path = _filesystems().join(path, part)
    return path


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    # object stores have no directories


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path)
    return _filesystems(path).exists(path)


def read_bytes(path: str) -> bytes:
    try:
        if is_local(path):
            with open(path, "rb") as handle:
                return handle.read()
        with _filesystems(path).open(path, compression_type="uncompressed") as handle:
            return handle.read()
    except Exception as exc:  # Beam wraps the real cause in BeamIOError / IOError
        raise StorageError(f"cannot read {path}: {exc}") from exc


def open_read(path: str):
    """A binary file object reading ``path`` as stored (no decompression), local or object store."""
    if is_local(path):
        return open(path, "rb")
    return _filesystems(path).open(path, compression_type="uncompressed")


def read_json(path: str) -> dict:
    data = read_bytes(path)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise StorageError(f"{path} is not valid JSON ({exc}); it was written by something else "
                           "or is corrupt: restore it from backup or remove it") from exc


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` (bytes, or any buffer such as a memoryview) so that readers see either no
    file or the whole file."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    if is_local(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        return
    data = bytes(data)  # Beam's object store uploaders take bytes
    if not data and path.startswith("s3://"):
        from core.object_store import put_empty_s3

        put_empty_s3(path)  # one PUT: atomic, and Beam's uploader cannot write zero bytes
        return
    fs = _filesystems(path)
    with fs.create(tmp, compression_type="uncompressed") as handle:
        handle.write(data)
    fs.rename([tmp], [path])


def dumps_json(obj) -> bytes:
    """Canonical JSON (sorted keys) so identical content gives identical bytes."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_json_atomic(path: str, obj) -> None:
    write_bytes_atomic(path, dumps_json(obj))


def _pattern_regex(pattern: str) -> re.Pattern:
    """Beam's glob semantics: ``**`` any characters, ``*`` and ``?`` within one segment."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            close = pattern.find("]", i + 1)
            if close < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1:close]
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = close + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _local_glob(pattern: str) -> list[str]:
    first = _GLOB_CHARS.search(pattern)
    if first is None:
        return [pattern] if os.path.isfile(pattern) else []
    static = pattern[:first.start()]
    base = static if static.endswith("/") else (os.path.dirname(static) or ".")
    if not os.path.isdir(base):
        return []
    regex = _pattern_regex(pattern)
    found = []
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            full = os.path.join(dirpath, name)
            if regex.match(full):
                found.append(full)
    return found


def glob(pattern: str) -> list[str]:
    """Files matching ``pattern`` (sorted); a pattern with no match gives []."""
    if is_local(pattern):
        return sorted(_local_glob(pattern))
    result = _filesystems(pattern).match([pattern])[0]
    return sorted(m.path for m in result.metadata_list)


def modified_time(path: str) -> float:
    """Last-modified time of a file, in Unix seconds (the object's on object stores)."""
    if is_local(path):
        return os.path.getmtime(path)
    found = _filesystems().match([path])[0].metadata_list
    if not found:
        raise StorageError(f"{path} does not exist")
    return float(found[0].last_updated_in_seconds)


def delete(paths: Iterable[str]) -> None:
    paths = [p for p in paths if exists(p)]
    local = [p for p in paths if is_local(p)]
    for path in local:
        if os.path.isdir(path):
            import shutil

            shutil.rmtree(path)
        else:
            os.remove(path)
    remote = [p for p in paths if not is_local(p)]
    for scheme in sorted({p.split("://", 1)[0] for p in remote}):
        same = [p for p in remote if p.startswith(scheme + "://")]
        _filesystems(same[0]).delete(same)


def delete_tree(prefix: str) -> None:
    """Remove every file below ``prefix`` (a directory locally, a key prefix on object stores)."""
    if is_local(prefix):
        if os.path.isdir(prefix):
            import shutil

            shutil.rmtree(prefix)
        return
    files = glob(prefix.rstrip("/") + "/**")
    if files:
        _filesystems(files[0]).delete(files)


def copy_tree(src_dir: str, dst_dir: str) -> list[str]:
    """Copy every file below ``src_dir`` to ``dst_dir`` (either on any file system), each
    atomically; returns the relative names."""
    if is_local(src_dir):
        src_dir = os.path.abspath(src_dir)
    prefix = src_dir.rstrip("/") + "/"
    names = []
    for path in glob(prefix + "**"):
        rel = path[len(prefix):]
        write_bytes_atomic(join(dst_dir, *rel.split("/")), read_bytes(path))
        names.append(rel)
    return sorted(names)


def local_target(dest_dir: str, rel: str) -> str:
    """``dest_dir``/``rel`` for a name taken from a listing; refuses any name that would land
    outside ``dest_dir`` (absolute, ``..`` segments, a drive or NUL), since listings of object
    stores and registries are not trusted input."""
    parts = rel.replace("\\", "/").split("/")
    if (not rel or rel.startswith("/") or "\0" in rel or any(p in ("..", "") for p in parts[:-1])
            or parts[-1] in ("", "..", ".")):
        raise StorageError(f"refusing to write {rel!r} under {dest_dir}: the name escapes the destination "
                           "(a crafted or corrupt listing); inspect the source store")
    base = os.path.realpath(dest_dir)
    target = os.path.realpath(os.path.join(base, *parts))
    if os.path.commonpath([base, target]) != base:
        raise StorageError(f"refusing to write {rel!r} under {dest_dir}: it resolves to {target}, outside "
                           "the destination; inspect the source store")
    return target


def download_tree(src_dir: str, dst_dir: str) -> str:
    """Copy a stored directory (any filesystem) to a local directory; returns dst_dir."""
    if is_local(src_dir):
        src_dir = os.path.abspath(src_dir)
    prefix = src_dir.rstrip("/") + "/"
    for path in glob(prefix + "**"):
        rel = path[len(prefix):]
        target = local_target(dst_dir, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as handle:
            handle.write(read_bytes(path))
    return dst_dir
