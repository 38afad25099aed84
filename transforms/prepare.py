"""Turn a window's events into the columnar form every later stage shares."""
from __future__ import annotations

import json
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import window_parts
from transforms.arrow import arrow_schema_for  # noqa: F401 (imported from here by sealing)
from transforms.example_encoding import deterministic_examples
from transforms.gzip_files import GzipWriter, in_background, tfrecord_frames
from transforms.versions import PROVENANCE_FORMAT
from transforms.window_parts import WindowParts
from transforms.write_window import digest_of_hashes, example_hashes


@dataclass
class PreparedWindow:
    """A window's rows (sorted by id) as parts (transforms/window_parts.py): the raw examples as
    their part file, their hashes, the Arrow batch and the provenance; the rest is small."""

    records: int            # rows
    digest: str             # raw content digest (transform fingerprint input)
    sources: list           # coverage: [{"uri":..., "bytes":..., "records": n}]
    parts: WindowParts

    def batch(self) -> pa.RecordBatch:
        return window_parts.batch_from_bytes(self.parts.get(window_parts.BATCH))


class PendingWindow:
    """``prepare_window``'s result while the raw part and the provenance are still being
    deflated on the compression thread (transforms/gzip_files.py): ``batch`` is ready for the
    window's statistics meanwhile; ``finish`` waits, puts those two parts and returns the
    PreparedWindow."""

    def __init__(self, prepared: PreparedWindow, batch: pa.RecordBatch, raw_part: Future, provenance: Future):
        self.batch = batch
        self._prepared, self._raw, self._provenance = prepared, raw_part, provenance

    def finish(self) -> PreparedWindow:
        parts = (self._prepared.parts.with_part(window_parts.RAW, self._raw.result())
                 .with_part(window_parts.PROVENANCE, self._provenance.result()))
        return replace(self._prepared, parts=parts)


PREPARE_BATCH_ROWS = 8192
"""Rows turned into examples, hashes and provenance at a time (``window.batch_rows``)."""
_QUEUED_SLICES = 4
"""Pieces waiting for the compression thread at most (memory: a few slices' frames)."""


def prepare_window(events: list, types: dict[str, str], sources_by_uri: dict, parts: WindowParts,
                   batch_rows: int = PREPARE_BATCH_ROWS) -> PendingWindow:
    """``events``: one window's events, unique and sorted by id (``split_duplicates``): what
    ``prepare_sorted`` does with them as rows."""
    from transforms.window_rows import WindowRows

    rows = WindowRows(types)
    rows.add_all(events, batch_rows)
    return prepare_sorted(rows.sorted_unique(), sources_by_uri, parts, batch_rows)


def prepare_sorted(rows, sources_by_uri: dict, parts: WindowParts,
                   batch_rows: int = PREPARE_BATCH_ROWS) -> PendingWindow:
    """``rows`` (transforms.window_rows.Sorted): puts the window's hashes and batch into
    ``parts`` and deflates its raw part and provenance on the compression thread, ``batch_rows``
    rows at a time, so the examples and provenance rows of one slice exist at once, never the
    window's."""
    from transforms.window_rows import texts

    batch, keys = rows.features, rows.keys
    names = sorted(set(texts(pc.unique(keys["source"]))))
    name_values = pa.array([n.encode("utf-8", "surrogatepass") for n in names], pa.large_binary())
    raw, provenance, hashes, queued = GzipWriter(), GzipWriter(), [], deque()

    def deflate(writer: GzipWriter, data: bytes) -> None:
        while len(queued) > _QUEUED_SLICES:  # the thread is behind: wait rather than pile slices up
            queued.popleft().result()
        queued.append(in_background(writer.add, data))

    head = json.dumps({"format": PROVENANCE_FORMAT, "sources": names, "rows": []}, separators=(",", ":"))
    deflate(provenance, head[:head.rindex("[]") + 1].encode("utf-8"))
    for start in range(0, batch.num_rows, batch_rows):
        examples = deterministic_examples(batch.slice(start, batch_rows))
        deflate(raw, tfrecord_frames(examples))
        hashes.append(example_hashes(examples))
        del examples
        part = keys.slice(start, batch_rows)
        where = pc.index_in(part["source"], value_set=name_values).to_pylist()
        origin = zip(texts(part["id"]), part["event_time_ms"].to_pylist(), where, texts(part["position"]),
                     part["ingest_time_ms"].to_pylist())
        body = json.dumps(list(origin), separators=(",", ":"))[1:-1]
        deflate(provenance, (body if start == 0 else "," + body).encode("utf-8"))
    deflate(provenance, head[head.rindex("[]") + 1:].encode("utf-8"))
    # the compression thread runs its tasks in order: these run after every piece was added
    raw_part, provenance_part = in_background(raw.finish), in_background(provenance.finish)
    hashes = b"".join(hashes)
    counts = pc.value_counts(keys["source"])
    per_source = dict(zip(texts(counts.field("values")), counts.field("counts").to_pylist()))
    sources = [dict(sources_by_uri.get(uri, {"uri": uri}), records=n) for uri, n in sorted(per_source.items())]
    parts = (parts.with_part(window_parts.HASHES, hashes)
             .with_part(window_parts.BATCH, window_parts.batch_to_bytes(batch)))
    return PendingWindow(PreparedWindow(batch.num_rows, digest_of_hashes(hashes), sources, parts), batch, raw_part,
                         provenance_part)


def lags_of(rows) -> np.ndarray:
    """Ingest-minus-event-time lags (seconds) of ``rows`` (window_rows.Sorted) whose records
    have an ingest time (Kafka's timestamp), in row order."""
    ingest = rows.keys["ingest_time_ms"]
    if ingest.null_count == len(ingest):
        return np.zeros(0)
    present = ingest.is_valid()
    lag = pc.subtract(ingest.filter(present), rows.keys["event_time_ms"].filter(present))
    return lag.to_numpy().astype(np.float64) / 1000.0
