"""Pending (unsealed) window parts of ``ctpipe stream``: written per cycle, read at sealing.

Each cycle decodes the records of its planned Kafka offset ranges and writes, for every
(window, offset range) pair that received events, one part file:

    <root>/pending/<source_id>/<window_id>/<topic>-p<partition>-<start>-<end>.jsonl.gz

(gzip JSON lines of the decoded events, sorted by id), and the range's dead letters to

    <root>/deadletter/<date>/stream-<source_id>-p<partition>-<start>-<end>.jsonl

and, for the dead letters that carry an event time (a readable time, an unusable record), an
index per (window, range) beside the window's parts, so sealing a window reads only its own:

    <root>/pending/<source_id>/<window_id>/<topic>-p<partition>-<start>-<end>.dead.json

All these names depend only on the window and the source range (and the date fixed in the cycle's
plan), and every file goes through a temporary name and a rename. A cycle replayed after a crash
executes the same plan (the checkpoint keeps it as ``in_flight``), so it rewrites exactly the same
names with the same content: a replayed part replaces the crashed attempt's part instead of adding
a second copy, so an id is never counted twice and never becomes a ``duplicate_id`` dead letter.

A window's content is always the union of all its parts; parts are kept after sealing, so late
data (a new part for an already sealed window) reseals the window from old + new parts as
v<N+1>, and resealing unchanged parts is a no-op (same content digest).

Late records (their window's end is at or before the watermark the cycle started from) follow
``window.late_data``: ``new_version`` writes their part under pending/ like any other (the
window is resealed); ``side_output`` writes it under ``<root>/late/<source_id>/<window_id>/``
with the same file name, and the window stays as it is. Both are counted (``late_records``).
A late record for a window whose parts ``ctpipe gc`` removed (``retention.pending_parts``) goes
to the side output whatever the policy: the window cannot be resealed from all its records.
"""
from __future__ import annotations

import bisect
import gzip
import json
import re
from dataclasses import dataclass
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from core import layout, storage
from core.layout import window_id, window_id_start_ms, window_start_ms
from core.records import DeadLetter, Event, pack_records, unpack_records
from transforms.gzip_files import GZIP_LEVEL
from transforms.kafka.source import OffsetRange, partition_of
from transforms.sources import spread_files

PART_SUFFIX = ".jsonl.gz"
DEAD_INDEX_SUFFIX = ".dead.json"
_LAST_VALID_MS = 253_402_300_800_000  # 10000-01-01: window ids have 4-digit years
_PART_RE = re.compile(f"/({layout.WINDOW_ID_PATTERN})/" + r"([^/]+)-p([0-9]+)-([0-9]+)-([0-9]+)\.jsonl\.gz$")
NEW_VERSION, SIDE_OUTPUT = "new_version", "side_output"


# --------------------------------------------------------------------------- names


def range_key(rng: OffsetRange) -> str:
    """``p<partition>-<start>-<end>`` with zero padding, so names sort by partition and offset."""
    return f"p{rng.partition:05d}-{rng.start:020d}-{rng.end:020d}"


def part_name(rng: OffsetRange) -> str:
    return f"{rng.topic}-{range_key(rng)}{PART_SUFFIX}"


pending_dir = layout.pending_dir
late_dir = layout.late_dir


def part_path(root: str, sid: str, wid: str, rng: OffsetRange, late_side_output: bool = False) -> str:
    base = late_dir(root, sid) if late_side_output else pending_dir(root, sid)
    return storage.join(base, wid, part_name(rng))


def deadletter_path(root: str, sid: str, date: str, rng: OffsetRange) -> str:
    return layout.deadletter_range_path(root, sid, date, range_key(rng))


def dead_index_path(root: str, sid: str, wid: str, rng: OffsetRange) -> str:
    return storage.join(pending_dir(root, sid), wid, f"{rng.topic}-{range_key(rng)}{DEAD_INDEX_SUFFIX}")


def ingest_dead_letters(root: str, sid: str, window_ids) -> list:
    """Dead letters written at ingest for source ``sid`` whose event time falls in ``window_ids``
    (records that had a readable event time but were unusable), so sealing can count them toward
    each window's bad fraction. Reads only those windows' indexes (``dead_index_path``): the work
    is proportional to the windows being sealed, never to the dead letters of the whole history
    or of other topics. Payloads are not needed for counting and are not in the index."""
    out = []
    for wid in sorted(set(window_ids)):
        for path in storage.glob(storage.join(pending_dir(root, sid), wid, "*" + DEAD_INDEX_SUFFIX)):
            for doc in storage.read_json(path)["dead_letters"]:
                out.append(DeadLetter(doc["reason"], doc.get("detail", ""), None, doc.get("source", ""),
                                      str(doc.get("position", "")), doc["event_time_ms"]))
    return out


@dataclass(frozen=True)
class PartInfo:
    path: str
    window_id: str
    range: OffsetRange


def parse_part_path(path: str) -> Optional[PartInfo]:
    match = _PART_RE.search(path)
    if not match:
        return None
    wid, topic, partition, start, end = match.groups()
    return PartInfo(path, wid, OffsetRange(topic, int(partition), int(start), int(end)))


def list_parts(root: str, sid: str, late: bool = False) -> dict[str, list[PartInfo]]:
    """window_id -> its part files (sorted), under pending/ (or late/ with ``late``)."""
    base = late_dir(root, sid) if late else pending_dir(root, sid)
    out: dict[str, list[PartInfo]] = {}
    for path in storage.glob(storage.join(base, "*", "*" + PART_SUFFIX)):
        info = parse_part_path(path)
        if info is not None:
            out.setdefault(info.window_id, []).append(info)
    return out


def window_parts(root: str, sid: str, window_ids) -> dict[str, list[PartInfo]]:
    """window_id -> its part files under pending/ (sorted), listing only those windows' folders."""
    out: dict[str, list[PartInfo]] = {}
    for wid in sorted(set(window_ids)):
        for path in storage.glob(storage.join(pending_dir(root, sid), wid, "*" + PART_SUFFIX)):
            info = parse_part_path(path)
            if info is not None:
                out.setdefault(wid, []).append(info)
    return out


def window_end_ms(wid: str, size_s: int) -> int:
    return window_id_start_ms(wid) + size_s * 1000


# --------------------------------------------------------------------------- (de)serialization


def event_to_json(event: Event) -> dict:
    return {"id": event.id, "t": event.event_time_ms, "f": event.features, "s": event.source,
            "p": event.position, "i": event.ingest_time_ms}


def event_from_json(obj: dict) -> Event:
    return Event(obj["id"], obj["t"], obj["f"], obj["s"], obj["p"], obj.get("i"))


def encode_part(events: Iterable[Event]) -> bytes:
    """gzip JSON lines, events sorted by (id, position); mtime 0 so equal content gives equal bytes."""
    ordered = sorted(events, key=lambda e: (e.id, int(e.position) if e.position.isdigit() else 0))
    lines = "".join(json.dumps(event_to_json(e), sort_keys=True, separators=(",", ":")) + "\n" for e in ordered)
    return gzip.compress(lines.encode("utf-8"), compresslevel=GZIP_LEVEL, mtime=0)


def decode_part(data: bytes) -> list[Event]:
    return [event_from_json(json.loads(line)) for line in gzip.decompress(data).decode("utf-8").splitlines() if line]


def read_part(path: str) -> list[Event]:
    return decode_part(storage.read_bytes(path))


# --------------------------------------------------------------------------- Kafka records


class RangeIndex:
    """Finds the planned OffsetRange holding (partition, offset)."""

    def __init__(self, ranges: Iterable[OffsetRange]):
        self._by_partition: dict[int, list[OffsetRange]] = {}
        for rng in sorted(ranges, key=lambda r: (r.partition, r.start)):
            self._by_partition.setdefault(rng.partition, []).append(rng)
        self._starts = {p: [r.start for r in rs] for p, rs in self._by_partition.items()}

    def find(self, partition: int, offset: int) -> OffsetRange:
        ranges = self._by_partition.get(partition, [])
        i = bisect.bisect_right(self._starts.get(partition, []), offset) - 1
        if i < 0 or not ranges[i].start <= offset < ranges[i].end:
            raise ValueError(f"partition {partition} offset {offset} is in no planned range")
        return ranges[i]


# --------------------------------------------------------------------------- Beam


@dataclass(frozen=True)
class PartSettings:
    root: str
    source_id: str
    window_size_s: int
    watermark_before_ms: Optional[int]
    """Watermark the cycle started from: windows ending at or before it are sealed (late data)."""
    late_policy: str
    date: str
    """UTC date (YYYYMMDD) fixed in the cycle plan, for the dead-letter folder."""
    collected_before_ms: Optional[int] = None
    """``ctpipe gc`` removed the parts of windows ending at or before this: a late record for
    such a window cannot reseal it from all its records, so it goes to the late side output."""


class _KeyEventDoFn(beam.DoFn):
    """Events -> ((window, range, side output?), pack_records chunk) of up to ``max_items``
    events of one part, and, on output ``newest``, (partition, newest event time) of the events
    it saw: per bundle one element per chunk and per partition, not one per event (the group
    before the part files then moves chunks, not records)."""

    NEWEST = "newest"

    def __init__(self, settings: PartSettings, ranges: tuple, max_items: int = 4096):
        self._s = settings
        self._ranges = ranges
        self._max = max_items
        self._index: Optional[RangeIndex] = None
        self._late = beam.metrics.Metrics.counter("ctpipe", "late_records")

    def setup(self):
        self._index = RangeIndex(self._ranges)

    def start_bundle(self):
        self._buffers: dict = {}
        self._newest: dict = {}

    def process(self, event: Event):
        partition = partition_of(event.source)
        if self._newest.get(partition, -1) < event.event_time_ms:
            self._newest[partition] = event.event_time_ms
        rng = self._index.find(partition, int(event.position))
        start = window_start_ms(event.event_time_ms, self._s.window_size_s)
        wid = window_id(start)
        wm = self._s.watermark_before_ms
        late = wm is not None and start + self._s.window_size_s * 1000 <= wm
        if late:
            self._late.inc()
        end = start + self._s.window_size_s * 1000
        collected = self._s.collected_before_ms is not None and end <= self._s.collected_before_ms
        side = late and (self._s.late_policy == SIDE_OUTPUT or collected)
        # plain tuple keys: deterministic coding for the GroupByKey
        key = (wid, rng.topic, rng.partition, rng.start, rng.end, side)
        buffer = self._buffers.setdefault(key, [])
        buffer.append(event)
        if len(buffer) >= self._max:
            del self._buffers[key]
            yield key, pack_records(buffer)

    def finish_bundle(self):
        buffers, self._buffers = self._buffers, {}
        for key, events in buffers.items():
            yield GlobalWindows.windowed_value((key, pack_records(events)))
        newest, self._newest = self._newest, {}
        for partition, ms in newest.items():
            yield beam.pvalue.TaggedOutput(self.NEWEST, GlobalWindows.windowed_value((partition, ms)))


def _write_part(element, settings: PartSettings):
    (wid, topic, partition, start, end, side), chunks = element
    rng = OffsetRange(topic, partition, start, end)
    events, _dead = unpack_records(chunks)
    path = part_path(settings.root, settings.source_id, wid, rng, late_side_output=side)
    storage.write_bytes_atomic(path, encode_part(events))
    yield {"name": f"{'late-' if side else ''}{wid}-{range_key(rng)}", "window_id": wid,
           "range": [rng.partition, rng.start, rng.end], "records": len(events), "late_side_output": side,
           "path": path}


def _write_dead(element, settings: PartSettings):
    rng, dead = OffsetRange(*element[0]), element[1]
    lines = sorted((json.dumps(d.to_json(), sort_keys=True) for d in dead),
                   key=lambda line: json.loads(line)["position"].zfill(20))
    storage.write_bytes_atomic(deadletter_path(settings.root, settings.source_id, settings.date, rng),
                               ("\n".join(lines) + "\n").encode("utf-8"))
    yield {"name": range_key(rng), "dead_letters": len(lines)}


def _dead_window(dead: DeadLetter, size_s: int) -> Optional[str]:
    """The window a dead letter counts toward (None without a usable event time)."""
    when = dead.event_time_ms
    if when is None or not 0 <= when < _LAST_VALID_MS:
        return None
    return window_id(window_start_ms(when, size_s))


def _write_dead_index(element, settings: PartSettings):
    (wid, topic, partition, start, end), dead = element
    rng = OffsetRange(topic, partition, start, end)
    docs = sorted(({"reason": d.reason, "detail": d.detail, "source": d.source, "position": d.position,
                    "event_time_ms": d.event_time_ms} for d in dead), key=lambda d: str(d["position"]).zfill(20))
    storage.write_json_atomic(dead_index_path(settings.root, settings.source_id, wid, rng), {"dead_letters": docs})
    yield wid


class WritePendingParts(beam.PTransform):
    """(events, dead letters) of one cycle -> part files, dead-letter files and per-window
    dead-letter indexes (deterministic names).

    Returns (part summaries, dead-letter counts per range file (dicts), per-partition newest
    event time (partition, ms)).
    """

    def __init__(self, settings: PartSettings, ranges: Iterable[OffsetRange]):
        super().__init__()
        self._settings = settings
        self._ranges = tuple(ranges)

    def expand(self, inputs):
        events, dead = inputs
        s = self._settings
        index_ranges = self._ranges
        keyed = events | "KeyByWindowAndRange" >> beam.ParDo(_KeyEventDoFn(s, index_ranges)).with_outputs(
            _KeyEventDoFn.NEWEST, main="chunks")
        parts = (keyed.chunks
                 | "GroupParts" >> beam.GroupByKey()
                 | "WriteParts" >> beam.FlatMap(_write_part, s))
        dead_files = (dead
                      | "KeyDeadByRange" >> beam.ParDo(_KeyDeadDoFn(index_ranges))
                      | "GroupDead" >> beam.GroupByKey()
                      | "WriteDead" >> beam.FlatMap(_write_dead, s))
        _ = (dead
             | "KeyDeadByWindow" >> beam.ParDo(_KeyDeadByWindowDoFn(index_ranges, s.window_size_s))
             | "GroupDeadByWindow" >> beam.GroupByKey()
             | "WriteDeadIndex" >> beam.FlatMap(_write_dead_index, s))
        newest = keyed[_KeyEventDoFn.NEWEST] | "NewestPerPartition" >> beam.CombinePerKey(max)
        return parts, dead_files, newest


class _KeyDeadDoFn(beam.DoFn):
    def __init__(self, ranges: tuple):
        self._ranges = ranges
        self._index: Optional[RangeIndex] = None

    def setup(self):
        self._index = RangeIndex(self._ranges)

    def process(self, dead: DeadLetter):
        rng = self._index.find(partition_of(dead.source), int(dead.position))
        yield (rng.topic, rng.partition, rng.start, rng.end), dead


class _KeyDeadByWindowDoFn(beam.DoFn):
    """Dead letters with an event time, keyed by (their window, their planned range)."""

    def __init__(self, ranges: tuple, size_s: int):
        self._ranges = ranges
        self._size_s = size_s
        self._index: Optional[RangeIndex] = None

    def setup(self):
        self._index = RangeIndex(self._ranges)

    def process(self, dead: DeadLetter):
        wid = _dead_window(dead, self._size_s)
        if wid is not None:
            rng = self._index.find(partition_of(dead.source), int(dead.position))
            yield (wid, rng.topic, rng.partition, rng.start, rng.end), dead


class ReadPendingChunks(beam.PTransform):
    """Part file paths (fixed when the graph is built) -> their Events as (window_id, packed
    chunk) (``transforms.ingest.WindowChunks``: windows by event time), one DoFn per part file,
    what ``SealWindows(chunked=True)`` groups."""

    def __init__(self, paths: Iterable[str], window_size_s: int, feature_types: Optional[dict] = None):
        super().__init__()
        self._paths = sorted(paths)
        self._size_s = window_size_s
        self._types = feature_types

    def expand(self, pbegin):
        return spread_files(pbegin, self._paths) | "ReadParts" >> beam.ParDo(_ReadPartDoFn(self._size_s, self._types))


class _ReadPartDoFn(beam.DoFn):
    def __init__(self, size_s: int, feature_types: Optional[dict]):
        self._size_s, self._types = size_s, feature_types

    def setup(self):
        from transforms.ingest import WindowChunks

        self._chunks = WindowChunks(self._size_s, feature_types=self._types)

    def process(self, path: str):
        self._chunks.start()  # empty for every part file
        add = self._chunks.add
        for event in read_part(path):
            yield from add(event)
        yield from self._chunks.flush()
