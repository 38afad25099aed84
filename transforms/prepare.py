"""Turn a window's events into the columnar form every later stage shares."""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, replace

import pyarrow as pa

from transforms import window_parts
from transforms.arrow import _ARROW_TYPES, events_to_record_batch
from transforms.example_encoding import deterministic_examples
from transforms.gzip_files import gzip_member, in_background, tfrecord_frames
from transforms.versions import provenance_json
from transforms.window_parts import WindowParts
from transforms.write_window import digest_of_hashes, example_hashes


def arrow_schema_for(types: dict[str, str]) -> pa.Schema:
    """Arrow schema of a prepared batch: the typed features, sorted by name."""
    return pa.schema([pa.field(name, _ARROW_TYPES[types[name]]) for name in sorted(types)])


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


def prepare_window(events: list, types: dict[str, str], sources_by_uri: dict, parts: WindowParts) -> PendingWindow:
    """``events``: one window's events, unique and sorted by id (``split_duplicates``). Puts the
    window's hashes and batch into ``parts`` and starts deflating its raw part and provenance
    (``transforms.versions.provenance_bytes`` of ``events``) in the background."""
    batch = events_to_record_batch(events, types)
    examples = deterministic_examples(batch)
    raw_part = in_background(gzip_member, tfrecord_frames(examples))
    provenance = in_background(gzip_member, provenance_json(events))
    hashes = example_hashes(examples)
    del examples
    per_source: dict[str, int] = {}
    for event in events:
        per_source[event.source] = per_source.get(event.source, 0) + 1
    sources = [dict(sources_by_uri.get(uri, {"uri": uri}), records=n) for uri, n in sorted(per_source.items())]
    parts = (parts.with_part(window_parts.HASHES, hashes)
             .with_part(window_parts.BATCH, window_parts.batch_to_bytes(batch)))
    return PendingWindow(PreparedWindow(len(events), digest_of_hashes(hashes), sources, parts), batch, raw_part,
                         provenance)
