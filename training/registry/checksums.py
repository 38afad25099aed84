"""Checksums of a model version: the CHECKSUMS.json document and its verification.

Every backend computes the document at push time (:func:`checksums_document`) over the
SavedModel files and the registry documents, and verifies a fetched copy against it
(:func:`verify_version_dir`) before the copy is renamed into place.

``CHECKSUMS.json``::

    {"algorithm": "sha256", "files": {relpath: {"sha256": ..., "bytes": ...}}, "dirs": [...]}
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping

from core.errors import IntegrityError

CHECKSUMS_FILE = "CHECKSUMS.json"
#: Buffer size for hashing and copying model files.
CHUNK_BYTES = 8 << 20


def sha256_file(path: str) -> tuple[str, int]:
    """sha256 hex digest and size in bytes of a local file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def local_tree(root: str) -> tuple[list[str], list[str]]:
    """(files, dirs) under a local directory as sorted POSIX relative paths."""
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for d in dirnames:
            dirs.append(os.path.normpath(os.path.join(rel_dir, d)).replace(os.sep, "/"))
        for f in filenames:
            files.append(os.path.normpath(os.path.join(rel_dir, f)).replace(os.sep, "/"))
    return sorted(files), sorted(dirs)


def checksums_document(root: str, extra: Mapping[str, bytes] = {}) -> dict:
    """The CHECKSUMS.json document of a local directory plus in-memory ``extra`` files."""
    files, dirs = local_tree(root)
    entries = {}
    for rel in files:
        digest, size = sha256_file(os.path.join(root, rel))
        entries[rel] = {"sha256": digest, "bytes": size}
    for rel, data in extra.items():
        entries[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return {"algorithm": "sha256", "files": dict(sorted(entries.items())), "dirs": dirs}


def verify_version_dir(root: str, *, model: str, version: int,
                       checksums_sha256: str | None) -> None:
    """Verifies a fetched copy of a version against its CHECKSUMS.json.

    Args:
      root: local directory holding the fetched files.
      model, version: for the messages.
      checksums_sha256: the sha256 of CHECKSUMS.json recorded at commit time (catches a
        CHECKSUMS.json rewritten to match tampered files); None skips that check.

    Raises:
      IntegrityError: naming the first changed, missing or extra file.
    """
    fix = (f"model {model!r} version {version} was tampered with or is corrupt; re-push the "
           f"model, or move its aliases to another version (rollback / set_alias)")
    path = os.path.join(root, CHECKSUMS_FILE)
    if not os.path.isfile(path):
        raise IntegrityError(f"{CHECKSUMS_FILE} is missing: {fix}")
    if checksums_sha256 is not None and sha256_file(path)[0] != checksums_sha256:
        raise IntegrityError(f"{CHECKSUMS_FILE} does not match the digest recorded at commit "
                             f"({checksums_sha256}): {fix}")
    with open(path, "rb") as f:
        try:
            expected = json.load(f)["files"]
        except (ValueError, KeyError) as e:
            raise IntegrityError(f"{CHECKSUMS_FILE} is unreadable ({e}): {fix}") from e
    actual, _ = local_tree(root)
    actual = [rel for rel in actual if rel != CHECKSUMS_FILE]
    for rel in sorted(set(expected) - set(actual)):
        raise IntegrityError(f"file {rel!r} is missing: {fix}")
    for rel in sorted(set(actual) - set(expected)):
        raise IntegrityError(f"file {rel!r} is not listed in {CHECKSUMS_FILE} (extra file): {fix}")
    for rel in actual:
        digest, size = sha256_file(os.path.join(root, rel))
        want = expected[rel]
        if digest != want["sha256"] or size != want["bytes"]:
            raise IntegrityError(
                f"file {rel!r} has sha256 {digest} ({size} bytes), expected {want['sha256']} "
                f"({want['bytes']} bytes): {fix}")

