"""Writing a window version: TFRecord parts, statistics, anomalies, then MANIFEST.json last.

Deterministic: records are sorted by id, file names depend only on the window and version, the
manifest holds no wall-clock time. Rewriting the same window with the same content is a no-op;
different content (late data, a new transform or schema) becomes version N+1. Every file goes
through a temporary name and a rename, and the manifest is written only after all parts exist,
so a crash never leaves a visible partial window.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Optional

from google.protobuf import text_format

from core import storage, window_store
from core.layout import window_id_start_ms
from transforms.gzip_files import tfrecord_gz_bytes

RAW_FILE = "raw-00000-of-00001.tfrecord.gz"
DATA_FILE = "data-00000-of-00001.tfrecord.gz"
STATS_FILE = "stats.pb"
ANOMALIES_FILE = "anomalies.pbtxt"


def content_digest(raw_hashes: bytes, record_count: int, transform_fingerprint: str, schema_version: int,
                   dead_letters: int = 0) -> str:
    """A window version's content digest; ``raw_hashes``: the sha256 of each raw example,
    concatenated in row order (``example_hashes``)."""
    h = hashlib.sha256()
    h.update(f"schema=v{schema_version};transform={transform_fingerprint};n={record_count};"
             f"dead={dead_letters}\n".encode())
    h.update(raw_hashes)
    return h.hexdigest()


def example_hashes(examples: Iterable[bytes]) -> bytes:
    """sha256 of each serialized example, concatenated in order."""
    sha256 = hashlib.sha256
    return b"".join(sha256(example).digest() for example in examples)


def digest_of_hashes(raw_hashes: bytes) -> str:
    """The raw content digest (the transform fingerprint's input) of those concatenated hashes."""
    return hashlib.sha256(raw_hashes).hexdigest()


@dataclass(frozen=True)
class WindowContent:
    """Everything a window version holds, assembled before writing."""

    window_id: str
    window_size_s: int
    raw_examples: tuple          # serialized raw tf.Examples, sorted by id
    transformed_examples: tuple  # serialized transformed tf.Examples, same order
    stats: object                # DatasetFeatureStatisticsList
    anomalies: object            # Anomalies
    verdict: str
    reasons: tuple
    dead_letters: int
    sources: tuple               # ({"uri": ..., ...}, ...) coverage of this window's records
    schema_version: int
    transform_fingerprint: str
    code_version: str
    quality: Optional[dict] = None
    dead_letters_by_source: Optional[dict] = None
    """{source: {reason: n}} (transforms/versions.py)."""
    events: tuple = ()
    """The records in row order; their provenance is written beside the examples."""
    provenance: Optional[bytes] = None
    """That provenance already encoded (transforms.versions.provenance_bytes of the records in
    row order), instead of ``events``."""
    raw_part: Optional[bytes] = None
    """The raw part file's bytes already encoded (``tfrecord_gz_bytes``), with ``raw_hashes`` and
    ``record_count``, instead of ``raw_examples`` (a staged window: transforms/window_parts.py)."""
    raw_hashes: Optional[bytes] = None
    record_count: Optional[int] = None
    transformed_part: Optional[bytes] = None
    """The transformed part file's bytes, with ``transformed_count``, instead of ``transformed_examples``."""
    transformed_count: Optional[int] = None

    def raw(self) -> tuple[bytes, bytes, int]:
        """(part file bytes, concatenated example hashes, records)."""
        if self.raw_part is not None:
            return self.raw_part, self.raw_hashes, self.record_count
        return (tfrecord_gz_bytes(self.raw_examples), example_hashes(self.raw_examples), len(self.raw_examples))

    def transformed(self) -> tuple[bytes, int]:
        if self.transformed_part is not None:
            return self.transformed_part, self.transformed_count
        return tfrecord_gz_bytes(self.transformed_examples), len(self.transformed_examples)


def write_window(root: str, content: WindowContent, fence=None) -> tuple[str, int, bool]:
    """Seal ``content`` as the next version of its window. Returns (window_id, version, written);
    ``written`` is False when the newest sealed version already holds exactly this content.
    ``fence`` (core.lock.Fence of the root's lease) is checked before the first part file and
    again right before the MANIFEST: a writer whose lease was taken over publishes nothing."""
    from transforms.versions import PROVENANCE_FILE, provenance_bytes

    raw_part, raw_hashes, record_count = content.raw()
    digest = content_digest(raw_hashes, record_count, content.transform_fingerprint, content.schema_version,
                            content.dead_letters)
    latest = window_store.latest_sealed(root, content.window_id)
    if latest is not None and latest.manifest.get("content_digest") == digest:
        return content.window_id, latest.version, False
    version = 1 if latest is None else latest.version + 1
    target = window_store.window_dir(root, content.window_id, version)
    what = f"window {content.window_id} v{version}"
    if fence is not None:
        fence.check_publish(what)
    if content.provenance is None:
        provenance, provenance_records = provenance_bytes(content.events), len(content.events)
    else:
        provenance, provenance_records = content.provenance, record_count
    transformed_part, transformed_count = content.transformed()
    files = []
    for kind, name, data, records in (
            ("raw", RAW_FILE, raw_part, record_count),
            ("transformed", DATA_FILE, transformed_part, transformed_count),
            ("stats", STATS_FILE, content.stats.SerializeToString(deterministic=True), None),
            ("anomalies", ANOMALIES_FILE, text_format.MessageToString(content.anomalies).encode(), None),
            ("provenance", PROVENANCE_FILE, provenance, provenance_records)):
        storage.write_bytes_atomic(storage.join(target, name), data)
        files.append({"path": name, "kind": kind, "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(), "records": records})
    start_ms = window_id_start_ms(content.window_id)
    manifest = {
        "format": "ctpipe.window/1",
        "window_id": content.window_id,
        "version": version,
        "start_ms": start_ms,
        "end_ms": start_ms + content.window_size_s * 1000,
        "record_count": record_count,
        "dead_letters": content.dead_letters,
        "dead_letters_by_source": content.dead_letters_by_source or {},
        "content_digest": digest,
        "files": files,
        "sources": list(content.sources),
        "schema_version": content.schema_version,
        "transform_fingerprint": content.transform_fingerprint,
        "validation": {"verdict": content.verdict, "reasons": list(content.reasons),
                       "stats_file": STATS_FILE, "anomalies_file": ANOMALIES_FILE},
        "quality": content.quality or {},
        "code_version": content.code_version,
        "supersedes": None if latest is None else latest.version,
    }
    if fence is not None:
        fence.check_publish(what)
    storage.write_json_atomic(storage.join(target, window_store.MANIFEST), manifest)
    return content.window_id, version, True
