"""Versioned schemas in storage: <root>/schema/v<N>/schema.pbtxt (TFMD text format)."""
from __future__ import annotations

import re
from typing import Optional

from pipeline import storage
from pipeline.errors import StorageError
from transforms.validation import schema_from_text, schema_to_text

_RE = re.compile(r"/schema/v([0-9]+)/schema\.pbtxt$")


def schema_path(root: str, version: int) -> str:
    return storage.join(root, "schema", f"v{version}", "schema.pbtxt")


def versions(root: str) -> list[int]:
    return sorted(int(m.group(1)) for p in storage.glob(storage.join(root, "schema", "v*", "schema.pbtxt"))
                  if (m := _RE.search(p)))


def load(root: str, version: Optional[int] = None):
    """(schema proto, its text, version) of ``version`` or the newest; None when there is none."""
    known = versions(root)
    if not known:
        return None
    version = known[-1] if version is None else version
    if version not in known:
        raise StorageError(f"schema v{version} does not exist under {root}/schema; known: "
                           + ", ".join(f"v{v}" for v in known))
    text = storage.read_bytes(schema_path(root, version)).decode()
    try:
        return schema_from_text(text), text, version
    except Exception as exc:
        raise StorageError(f"{schema_path(root, version)} is not a valid schema.pbtxt: {exc}") from exc


def save(root: str, schema) -> int:
    """Store ``schema`` as a new version unless it equals the newest; returns its version."""
    text = schema_to_text(schema)
    current = load(root)
    if current is not None and current[1] == text:
        return current[2]
    version = (current[2] + 1) if current else 1
    storage.write_bytes_atomic(schema_path(root, version), text.encode())
    return version
