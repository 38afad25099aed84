"""Turn a window's events into the columnar form every later stage shares."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from transforms import window_parts
from transforms.arrow import _ARROW_TYPES, events_to_record_batch
from transforms.example_encoding import deterministic_examples
from transforms.window_parts import WindowParts
from transforms.write_window import digest_of_hashes, example_hashes, tfrecord_gz_bytes


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


def prepare_window(events: list, types: dict[str, str], sources_by_uri: dict, provenance: bytes,
                   parts: WindowParts) -> tuple[PreparedWindow, pa.RecordBatch]:
    """``events``: one window's events, unique and sorted by id (``split_duplicates``);
    ``provenance``: theirs, in that order. Puts the window's parts into ``parts``; returns the
    prepared window and its batch (for the statistics computed right away)."""
    batch = events_to_record_batch(events, types)
    examples = deterministic_examples(batch)
    hashes = example_hashes(examples)
    per_source: dict[str, int] = {}
    for event in events:
        per_source[event.source] = per_source.get(event.source, 0) + 1
    sources = [dict(sources_by_uri.get(uri, {"uri": uri}), records=n) for uri, n in sorted(per_source.items())]
    parts = (parts.with_part(window_parts.RAW, tfrecord_gz_bytes(examples))
             .with_part(window_parts.HASHES, hashes)
             .with_part(window_parts.BATCH, window_parts.batch_to_bytes(batch))
             .with_part(window_parts.PROVENANCE, provenance))
    return PreparedWindow(len(events), digest_of_hashes(hashes), sources, parts), batch
