"""Turn a window's events into the columnar form every later stage shares."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

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
                   parts: WindowParts, while_writing: Optional[Callable] = None):
    """``events``: one window's events, unique and sorted by id (``split_duplicates``);
    ``provenance``: theirs, in that order. Puts the window's parts into ``parts``; returns the
    prepared window and its batch (for the statistics computed right away).

    ``while_writing(batch)``: work on the batch done while the raw part file is written in a
    thread (TensorFlow's writer compresses with the GIL released, so the two share the cores);
    then ``(prepared, batch, while_writing(batch))`` is returned."""
    batch = events_to_record_batch(events, types)
    examples = deterministic_examples(batch)
    with ThreadPoolExecutor(max_workers=1) as pool:
        raw_part = pool.submit(tfrecord_gz_bytes, examples)
        hashes = example_hashes(examples)
        per_source: dict[str, int] = {}
        for event in events:
            per_source[event.source] = per_source.get(event.source, 0) + 1
        sources = [dict(sources_by_uri.get(uri, {"uri": uri}), records=n) for uri, n in sorted(per_source.items())]
        extra = while_writing(batch) if while_writing is not None else None
        raw = raw_part.result()
    parts = (parts.with_part(window_parts.RAW, raw)
             .with_part(window_parts.HASHES, hashes)
             .with_part(window_parts.BATCH, window_parts.batch_to_bytes(batch))
             .with_part(window_parts.PROVENANCE, provenance))
    prepared = PreparedWindow(len(events), digest_of_hashes(hashes), sources, parts)
    return (prepared, batch) if while_writing is None else (prepared, batch, extra)
