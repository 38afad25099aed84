"""Versioned schemas in storage: <root>/schema/v<N>/schema.pbtxt (TFMD text format)."""
from __future__ import annotations

import re
from typing import Optional

from core import layout, storage
from core.errors import StorageError

_RE = re.compile(r"/schema/v([0-9]+)/schema\.pbtxt$")


def schema_to_text(schema) -> str:
    """TFMD text format of a Schema proto (what schema.pbtxt holds)."""
    from google.protobuf import text_format

    return text_format.MessageToString(schema)


def schema_from_text(text: str):
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    return text_format.Parse(text, schema_pb2.Schema())


schema_path = layout.schema_path


def versions(root: str) -> list[int]:
    return sorted(int(m.group(1)) for p in storage.glob(layout.schema_glob(root))
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


def save(root: str, schema, fence=None) -> int:
    """Store ``schema`` as a new version unless it equals the newest; returns its version.
    ``fence`` (core.lock: the root's lease or its Fence) is checked before the write."""
    text = schema_to_text(schema)
    current = load(root)
    if current is not None and current[1] == text:
        return current[2]
    version = (current[2] + 1) if current else 1
    if fence is not None:
        fence.check_publish(f"schema v{version}")
    storage.write_bytes_atomic(schema_path(root, version), text.encode())
    return version
