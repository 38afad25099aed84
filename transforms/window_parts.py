"""A window's heavy content between sealing stages: in memory, or staged as files.

Sealing passes one WindowState per window from stage to stage (transforms/seal.py). On the
DirectRunner every stage boundary that waits for all windows (this run's statistics as a side
input to validation, the transform's analysis before it is applied) holds every window's
state at once, so a state that carries its rows (the Arrow batch, the raw and transformed
TFRecord parts, the provenance) made a run's memory grow with its input: 2.9 GB at 1M rows.

``WindowParts`` holds those named byte strings either in the state itself (``staging`` None:
the unbounded graph, whose panes of one window may be in flight at once, and unit tests) or as
files under ``staging``, a storage URI private to one window of one run (local, s3://, gs://
alike: core/storage.py). A staged state is a few hundred bytes whatever the window's size; a
stage reads the parts it needs when it needs them. Files are written atomically under names
that depend only on the window, so a retried bundle rewrites the same bytes; the run deletes
its scratch directory when it ends, and ``ctpipe gc`` removes a crashed run's.

Parts are immutable once put: ``with_part`` returns new parts (a state's input object is never
changed under another consumer of the same element).
"""
from __future__ import annotations

import hashlib
from typing import Optional

from core import storage

RAW = "raw.tfrecord.gz"
"""The raw examples as the window's raw part file (transforms.write_window.tfrecord_gz_bytes)."""
HASHES = "example-hashes.bin"
"""sha256 of each raw example, concatenated in row order (the content digest's input)."""
BATCH = "batch.arrow"
"""The features as one Arrow RecordBatch (IPC stream format)."""
PROVENANCE = "provenance.bin"
"""transforms.versions.provenance_bytes of the rows."""
TRANSFORMED = "data.tfrecord.gz"
"""The transformed examples as the window's transformed part file."""


class WindowParts:
    """Named byte strings of one window, held here or under ``staging`` (see the module)."""

    def __init__(self, staging: Optional[str] = None, held: Optional[dict] = None):
        self.staging = staging
        self._held = dict(held or {})

    def with_part(self, name: str, data: bytes) -> "WindowParts":
        if self.staging is None:
            return WindowParts(None, {**self._held, name: bytes(data)})
        storage.write_bytes_atomic(storage.join(self.staging, name), data)
        return self

    def get(self, name: str) -> bytes:
        if self.staging is None:
            try:
                return self._held[name]
            except KeyError:
                raise KeyError(f"window part {name!r} was never put (held: {sorted(self._held)})") from None
        return storage.read_bytes(storage.join(self.staging, name))

    @property
    def held_bytes(self) -> int:
        """Bytes carried by the object itself (0 when staged)."""
        return sum(map(len, self._held.values()))


class SpillFiles:
    """Spill files of one run's collector, named after the input file being read and the chunk's
    place in it (``<base>/<sub...>/<sha256(path)[:24]>-<seq>.<suffix>``), so a retried bundle
    rewrites the same files (transforms.ingest.WindowChunks, schema_inference.FeatureColumns)."""

    def __init__(self, base: str, suffix: str):
        self._base, self._suffix = base, suffix
        self.start("")

    def start(self, path: str) -> None:
        """Names for a new input file."""
        self._key = hashlib.sha256(path.encode()).hexdigest()[:24]
        self._seq = 0

    def put(self, data: bytes, *sub: str) -> str:
        """Write ``data`` to the next file; its URI."""
        self._seq += 1
        uri = storage.join(self._base, *sub, f"{self._key}-{self._seq:06d}.{self._suffix}")
        storage.write_bytes_atomic(uri, data)
        return uri


def unspill(item) -> bytes:
    """A chunk's bytes: ``item`` itself, or read from the spill file it names."""
    return storage.read_bytes(item) if isinstance(item, str) else item


def batch_to_bytes(batch) -> memoryview:
    """``batch`` in Arrow's IPC stream format, as a view of Arrow's buffer (not copied into a
    Python bytes object: a staged part is written from it as it is)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return memoryview(sink.getvalue())


def batch_from_bytes(data: bytes):
    import pyarrow as pa

    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        batches = list(reader)
    if len(batches) != 1:
        raise ValueError(f"a staged window batch holds {len(batches)} record batches, not 1")
    return batches[0]
