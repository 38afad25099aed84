"""Turn a window's events into the columnar form every later stage shares."""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from tfx_bsl.coders import example_coder

from transforms.arrow import _ARROW_TYPES, canonical_examples, events_to_record_batch
from transforms.write_window import raw_digest


def arrow_schema_for(types: dict[str, str]) -> pa.Schema:
    """Arrow schema of a prepared batch: the typed features, sorted by name."""
    return pa.schema([pa.field(name, _ARROW_TYPES[types[name]]) for name in sorted(types)])


@dataclass
class PreparedWindow:
    batch: pa.RecordBatch   # the features, rows sorted by id
    ids: list               # ids in row order
    raw_examples: list      # serialized raw tf.Examples, row order
    digest: str             # raw content digest (transform fingerprint input)
    sources: list           # coverage: [{"uri":..., "bytes":..., "records": n}]


def prepare_window(events: list, types: dict[str, str], sources_by_uri: dict) -> PreparedWindow:
    """``events``: one window's events, unique and sorted by id (``split_duplicates``)."""
    batch = events_to_record_batch(events, types)
    examples = canonical_examples(example_coder.RecordBatchToExamples(batch))
    per_source: dict[str, int] = {}
    for event in events:
        per_source[event.source] = per_source.get(event.source, 0) + 1
    sources = [dict(sources_by_uri.get(uri, {"uri": uri}), records=n) for uri, n in sorted(per_source.items())]
    return PreparedWindow(batch, [e.id for e in events], examples, raw_digest(examples), sources)
