"""Reading, decoding, checking and keying event files in one DoFn per file.

    file path -> its SourceRecords (transforms/sources.py) -> each through the routing steps
    (decode, record checks: transforms/routing.py) -> DeadLetters to output ``deadletter``, the
    events to a collector that emits them in chunks: by window (``WindowChunks``, the backfill's
    main pass) or as feature columns (``transforms.schema_inference.FeatureColumns``, the first
    schema's statistics pass)

The same records, events, dead letters and counters (``records_in``, ``deadletter:<reason>``,
``outside_range``) as ``ReadEventFiles | DecodeAndCheck``, a window assignment and a chunking
step (``transforms.seal.ChunkByWindow``), with one runner hop per chunk instead of four per
record: on the DirectRunner the per-record hops were a fifth of a backfill's time. Chunks are cut
per file (a collector starts empty for every file and is flushed at its end), so what a chunk holds
never depends on how the runner bundles files, and a file whose reading failed half-way leaves
nothing behind for the next one.
"""
from __future__ import annotations

from typing import Optional, Sequence

import apache_beam as beam

from core.layout import window_id, window_start_ms
from core.records import DeadLetter, pack_records
from transforms.routing import DEADLETTER, Steps
from transforms.sources import check_format, read_file, spread_files
from transforms.window_parts import SpillFiles
from transforms.window_rows import pack_rows


class WindowChunks:
    """Events -> (window_id, chunk) of up to ``max_items`` events of one window: ``pack_rows``
    columns when ``feature_types`` (the schema's) are given, else a ``pack_records`` pickle;
    events outside [start_ms, end_ms) are counted (``outside_range``) and left out: they are
    valid, just not part of this run (the run that covers them seals them).

    ``spill`` (a storage URI private to the run): each chunk is written to a file there and the
    element carries its URI instead of its bytes, so the shuffle before sealing (which the
    DirectRunner holds in memory whole) holds names, not the input. File names depend only on
    the input file, the window and the chunk's place in that file, so a retried bundle rewrites
    the same files; sealing reads them back (transforms/seal.py)."""

    def __init__(self, size_s: int, start_ms: Optional[int] = None, end_ms: Optional[int] = None,
                 max_items: int = 4096, spill: Optional[str] = None, feature_types: Optional[dict] = None):
        self._size_s, self._start_ms, self._end_ms, self._max = size_s, start_ms, end_ms, max_items
        self._spill = None if spill is None else SpillFiles(spill, "chunk")
        self._types = feature_types

    def start(self, path: str = ""):
        """Empty, for a new file (``path``: its name, for the spill files' names)."""
        self._outside = beam.metrics.Metrics.counter("ctpipe", "outside_range")
        self._buffers: dict = {}
        if self._spill is not None:
            self._spill.start(path)

    def _chunk(self, wid: str, events: list):
        data = pack_records(events) if self._types is None else pack_rows(events, self._types)
        return wid, (data if self._spill is None else self._spill.put(data, wid))

    def add(self, event):
        when = event.event_time_ms
        if ((self._start_ms is not None and when < self._start_ms)
                or (self._end_ms is not None and when >= self._end_ms)):
            self._outside.inc()
            return ()
        wid = window_id(window_start_ms(when, self._size_s))
        buffer = self._buffers.setdefault(wid, [])
        buffer.append(event)
        if len(buffer) < self._max:
            return ()
        del self._buffers[wid]
        return (self._chunk(wid, buffer),)

    def flush(self):
        buffers, self._buffers = self._buffers, {}
        return [self._chunk(wid, events) for wid, events in buffers.items()]


class _IngestDoFn(beam.DoFn):
    def __init__(self, fmt: str, max_bytes: int, steps: Sequence[tuple], collector, per_file: Optional[int]):
        self._fmt, self._max_bytes, self._per_file = fmt, max_bytes, per_file
        self._steps = tuple(steps)
        self._collector = collector

    def setup(self):
        self._run = Steps(self._steps)
        self._records = beam.metrics.Metrics.counter("ctpipe", "records_in")

    def process(self, path: str):
        self._collector.start(path)  # empty: nothing of a file whose reading failed is kept
        run, add, n = self._run, self._collector.add, 0
        for record in read_file(path, self._fmt, self._max_bytes, self._per_file):
            n += 1
            result = run(record)
            if isinstance(result, DeadLetter):
                yield beam.pvalue.TaggedOutput(DEADLETTER, result)
            else:
                yield from add(result)
        if n:
            self._records.inc(n)
        yield from self._collector.flush()


class IngestFiles(beam.PTransform):
    """Files -> (chunks from ``collector``, dead letters): see the module docstring. ``steps``:
    the routing steps every record goes through (``((decode_record, spec), (check_event, rules))``);
    ``per_file``: only the first that many records of each file (a sample)."""

    def __init__(self, files: list, fmt: str, max_record_bytes: int, steps: Sequence[tuple], collector,
                 per_file: Optional[int] = None):
        super().__init__()
        check_format(fmt)
        self._files, self._fmt, self._max_bytes = list(files), fmt, max_record_bytes
        self._steps, self._collector, self._per_file = tuple(steps), collector, per_file

    def expand(self, pbegin):
        out = (spread_files(pbegin, self._files)
               | "ReadDecodeCollect" >> beam.ParDo(_IngestDoFn(self._fmt, self._max_bytes, self._steps,
                                                              self._collector, self._per_file))
               .with_outputs(DEADLETTER, main="chunks"))
        return out.chunks, out[DEADLETTER]
