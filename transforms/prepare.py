"""Turn a window's events into the columnar form every later stage shares."""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from tfx_bsl.coders import example_coder

from transforms.arrow import _ARROW_TYPES, canonical_examples, events_to_record_batch
from transforms.decode import BYTES
from transforms.preprocess import ID_COLUMN, PASSTHROUGH, WINDOW_COLUMN
from transforms.write_window import raw_digest


def arrow_schema_for(types: dict[str, str]) -> pa.Schema:
    """Arrow schema of a prepared batch: typed features (sorted) then the passthrough columns."""
    fields = [pa.field(name, _ARROW_TYPES[types[name]]) for name in sorted(types)]
    fields += [pa.field(name, _ARROW_TYPES[BYTES]) for name in PASSTHROUGH]
    return pa.schema(fields)


@dataclass
class PreparedWindow:
    batch: pa.RecordBatch   # features + __window__ + __id__, rows sorted by id
    ids: list               # ids in row order
    raw_examples: list      # [(id, serialized raw tf.Example)]
    digest: str             # raw content digest (transform fingerprint input)
    sources: list           # coverage: [{"uri":..., "bytes":..., "records": n}]

    def plain_batch(self) -> pa.RecordBatch:
        names = [n for n in self.batch.schema.names if n not in PASSTHROUGH]
        return pa.RecordBatch.from_arrays([self.batch.column(n) for n in names], names)


def prepare_window(wid: str, events: list, types: dict[str, str], sources_by_uri: dict) -> PreparedWindow:
    ids = [e.id for e in events]
    batch = events_to_record_batch(events, types, {WINDOW_COLUMN: [wid.encode()] * len(events),
                                                   ID_COLUMN: [i.encode() for i in ids]})
    prepared = PreparedWindow(batch, ids, [], "", [])
    examples = canonical_examples(example_coder.RecordBatchToExamples(prepared.plain_batch()))
    prepared.raw_examples = list(zip(ids, examples))
    prepared.digest = raw_digest(examples)
    per_source: dict[str, int] = {}
    for event in events:
        per_source[event.source] = per_source.get(event.source, 0) + 1
    prepared.sources = [dict(sources_by_uri.get(uri, {"uri": uri}), records=n) for uri, n in sorted(per_source.items())]
    return prepared


class _PrepareDoFn(beam.DoFn):
    def __init__(self, types, sources_by_uri):
        self._types = types
        self._sources = sources_by_uri

    def process(self, element):
        wid, events = element
        if events:
            yield wid, prepare_window(wid, events, self._types, self._sources)


class PrepareWindows(beam.PTransform):
    """(window_id, [Event sorted by id]) -> (window_id, PreparedWindow)."""

    def __init__(self, types: dict[str, str], sources_by_uri: dict):
        super().__init__()
        self._fn = _PrepareDoFn(types, sources_by_uri)

    def expand(self, windows):
        return windows | "Prepare" >> beam.ParDo(self._fn)
