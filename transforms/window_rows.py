"""A window's rows as Arrow columns while it is prepared: the merge and de-duplication rules of
transforms/versions.py and transforms/windowing.py without a Python object per row.

Sealing used to unpack a whole window into ``Event`` tuples (about 720 bytes each with their
feature dicts), merge, sort and de-duplicate those, and build the Arrow batch from them: a
208,000-row window held ~150 MB of tuples, and ~330 MB at the peak of its preparation. Here each
chunk of events (a few thousand, as ingest packed them) becomes Arrow columns as soon as it is
unpacked, so what a window holds is its columns (tens of bytes per row) plus one chunk of Python
objects; merging with the previous version, de-duplicating by id and sorting are Arrow
kernels. ``WindowRows.sorted_unique`` gives exactly what
``split_duplicates(merge_records(previous, events, dead))`` gives on the same records (the
reference, kept for the record-level rules' own tests; tests/transforms/test_window_rows.py holds
the two to the same result).

Keys are kept as UTF-8 bytes (``surrogatepass``: an id or a file name may hold a lone surrogate),
whose byte order is the code point order Python sorts ``str`` by.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.records import DeadLetter, Event
from transforms.arrow import arrow_schema_for, columns_to_record_batch
from transforms.decode import preview
from transforms.window_parts import batch_from_bytes, batch_to_bytes

KEYS = ("id", "event_time_ms", "source", "position", "ingest_time_ms")
_KEY_TYPES = (pa.large_binary(), pa.int64(), pa.large_binary(), pa.large_binary(), pa.int64())
_NUL = pa.scalar(b"\x00", pa.large_binary())
"""Between source and position in an origin key: no file name or position holds it."""


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _binary(values: list) -> pa.Array:
    """UTF-8 bytes of ``values`` (str) as a large_binary array; Arrow encodes them in C unless one
    holds a lone surrogate, which only ``surrogatepass`` can encode."""
    try:
        return pa.array(values, pa.large_string()).cast(pa.large_binary())
    except (UnicodeEncodeError, pa.ArrowException):
        return pa.array([_utf8(v) for v in values], pa.large_binary())


def texts(array) -> list:
    """The str values of a large_binary array of ``_binary`` (``surrogatepass`` where needed)."""
    try:
        return array.cast(pa.large_string()).to_pylist()
    except pa.ArrowException:
        return [_text(v) for v in array.to_pylist()]


def _keys_batch(events: list) -> pa.RecordBatch:
    columns = [_binary([e.id for e in events]), pa.array([e.event_time_ms for e in events], pa.int64()),
               _binary([e.source for e in events]), _binary([e.position for e in events]),
               pa.array([e.ingest_time_ms for e in events], pa.int64())]
    return pa.RecordBatch.from_arrays(columns, list(KEYS))


ROWS_MAGIC = b"ctpipe.rows/1\n"
"""Start of a ``pack_rows`` chunk (a ``core.records.pack_records`` pickle starts with 0x80)."""
_U64 = struct.Struct("<Q")


def _features_batch(events: list, feature_types: dict) -> pa.RecordBatch:
    features = [e.features for e in events]
    columns = {name: [f.get(name) for f in features] for name in feature_types}
    return columns_to_record_batch(columns, feature_types, len(events))


def pack_rows(events: list, feature_types: dict) -> bytes:
    """A chunk of one window's ``events`` as Arrow columns (their keys, then their features typed
    by ``feature_types``): what ingest hands to sealing instead of pickled records, so sealing
    reads columns without building a Python object per record (``WindowRows.add_packed``)."""
    keys = batch_to_bytes(_keys_batch(events))
    return b"".join((ROWS_MAGIC, _U64.pack(len(keys)), keys, batch_to_bytes(_features_batch(events, feature_types))))


def is_packed_rows(data: bytes) -> bool:
    return data[:len(ROWS_MAGIC)] == ROWS_MAGIC


@dataclass
class Sorted:
    """A window's rows, unique by id, sorted by id: ``features`` (one RecordBatch, the typed
    features sorted by name) and ``keys`` (id, event time, source, position, ingest time) row by
    row; ``duplicates``: the rows that lost to an earlier one with the same id."""

    features: pa.RecordBatch
    keys: pa.Table
    duplicates: list


class WindowRows:
    """Rows of one window, added a chunk of ``Event``s at a time (``add``)."""

    def __init__(self, feature_types: dict[str, str]):
        self._types = feature_types
        self._keys: list = []
        self._features: list = []
        self.sources: set = set()
        """The sources of the rows added."""

    def add(self, events: Iterable[Event]) -> None:
        events = list(events)
        if not events:
            return
        self._keys.append(_keys_batch(events))
        self.sources.update({e.source for e in events})
        self._features.append(_features_batch(events, self._types))

    def add_packed(self, data: bytes) -> None:
        """Add a ``pack_rows`` chunk packed with the same feature types."""
        at = len(ROWS_MAGIC)
        (size,) = _U64.unpack_from(data, at)
        view = memoryview(data)
        keys = batch_from_bytes(view[at + 8:at + 8 + size])
        features = batch_from_bytes(view[at + 8 + size:])
        if features.schema != arrow_schema_for(self._types):
            raise ValueError(f"a packed chunk holds the features {features.schema.names}, typed otherwise than "
                             f"this window's schema ({sorted(self._types)}); it was packed under another schema")
        self._keys.append(keys)
        self._features.append(features)
        self.sources.update(texts(pc.unique(keys["source"])))

    def add_all(self, events: Iterable[Event], chunk_rows: int) -> None:
        """``add`` ``events`` ``chunk_rows`` at a time (an iterator is consumed as it goes)."""
        chunk: list = []
        for event in events:
            chunk.append(event)
            if len(chunk) >= chunk_rows:
                self.add(chunk)
                chunk = []
        self.add(chunk)

    def _tables(self) -> tuple[pa.Table, pa.Table]:
        keys = pa.Table.from_batches(self._keys, schema=pa.schema(list(zip(KEYS, _KEY_TYPES))))
        features = pa.Table.from_batches(self._features, schema=arrow_schema_for(self._types))
        return keys, features

    @property
    def rows(self) -> int:
        return sum(b.num_rows for b in self._keys)

    def sorted_unique(self, previous: Optional["WindowRows"] = None, dead: Iterable[DeadLetter] = ()) -> Sorted:
        """The rows of ``split_duplicates(merge_records(previous, these rows, dead))``: the previous
        version's rows whose (source, position) this run did not read again (as an event or as a
        dead letter ``dead``), plus this run's rows (one per (source, position): a record read
        twice is one record), unique by id (the first by (id, source, position) is kept; the
        others are ``duplicates``), sorted by id."""
        keys, features = self._tables()
        self._keys, self._features = [], []
        keys, features = _last_per_origin(keys, features)
        if previous is not None and previous.rows:
            old_keys, old_features = previous._tables()
            previous._keys, previous._features = [], []
            read_again = pc.binary_join_element_wise(keys["source"], keys["position"], _NUL)
            letters = [d for d in dead]
            if letters:
                dead_origins = pa.array([_utf8(d.source) + b"\x00" + _utf8(d.position) for d in letters],
                                        pa.large_binary())
                read_again = pa.chunked_array(read_again.chunks + [dead_origins], pa.large_binary())
            old_origins = pc.binary_join_element_wise(old_keys["source"], old_keys["position"], _NUL)
            carried = pc.invert(pc.is_in(old_origins, value_set=pa.concat_arrays(read_again.chunks)
                                         if read_again.num_chunks else pa.array([], pa.large_binary())))
            keys = pa.concat_tables([old_keys.filter(carried), keys])
            features = pa.concat_tables([old_features.filter(carried), features])
        order = pc.sort_indices(keys["id"]).to_numpy().copy()  # stable: equal ids keep their order
        order, duplicates = _unique_ids(keys, order)
        take = pa.array(order, pa.int64())
        batch = _taken(features, take)
        del features
        return Sorted(batch, pa.Table.from_batches([_taken(keys, take)]), duplicates)


def _taken(table: pa.Table, take: pa.Array) -> pa.RecordBatch:
    """One RecordBatch of ``table``'s rows ``take``, a column at a time: besides the table and
    the result, one column's chunks joined is the most held at once (``Table.take`` joins every
    column's chunks before it takes any)."""
    return pa.RecordBatch.from_arrays([table.column(i).combine_chunks().take(take) for i in range(table.num_columns)],
                                      schema=table.schema)


def _last_per_origin(keys: pa.Table, features: pa.Table) -> tuple[pa.Table, pa.Table]:
    """One row per (source, position), the last added (``merge_records``' dict keeps the last).
    (By a stable sort of the origins, not ``Table.group_by``, which crashed pyarrow 10 here.)"""
    n = keys.num_rows
    if n < 2:
        return keys, features
    origins = pc.binary_join_element_wise(keys["source"], keys["position"], _NUL).combine_chunks()
    order = pc.sort_indices(origins).to_numpy()
    ordered = origins.take(pa.array(order, pa.int64()))
    same_as_next = pc.equal(ordered.slice(0, n - 1), ordered.slice(1)).to_numpy(zero_copy_only=False)
    if not same_as_next.any():
        return keys, features
    last = np.ones(n, bool)
    last[:-1] = ~same_as_next
    keep = pa.array(np.sort(order[last]), pa.int64())  # the kept rows in their added order
    return keys.take(keep), features.take(keep)


def _position_key(position: str):
    return (0, int(position), "") if position.isdigit() else (1, 0, position)


def _unique_ids(keys: pa.Table, order: np.ndarray) -> tuple[np.ndarray, list]:
    """``order`` (row numbers sorted by id) without the rows that repeat an id, and those rows as
    ``duplicate_id`` dead letters; among equal ids the first by (source, position) is kept, as
    ``transforms.windowing.split_duplicates`` does."""
    if len(order) < 2:
        return order, []
    ids = keys["id"].combine_chunks().take(pa.array(order, pa.int64()))
    same = pc.equal(ids.slice(1), ids.slice(0, len(order) - 1))
    repeats = np.flatnonzero(same.to_numpy(zero_copy_only=False)) + 1
    if not len(repeats):
        return order, []
    sources, positions, times = (keys[k].combine_chunks() for k in ("source", "position", "event_time_ms"))
    is_repeat = np.zeros(len(order), bool)
    is_repeat[repeats] = True
    drop, duplicates = np.zeros(len(order), bool), []
    for start in repeats[~is_repeat[repeats - 1]] - 1:  # the first row of each run of one id
        end = start + 1
        while end < len(order) and is_repeat[end]:
            end += 1
        rows = [int(r) for r in order[start:end]]
        origin = {r: (_text(sources[r].as_py()), _text(positions[r].as_py())) for r in rows}
        rows.sort(key=lambda r: (origin[r][0], _position_key(origin[r][1])))
        order[start:end] = rows
        first = origin[rows[0]]
        rid = preview(_text(ids[int(start)].as_py()))
        for r in rows[1:]:
            duplicates.append(DeadLetter("duplicate_id", f"id {rid} already seen at {first[0]}:{first[1]}", None,
                                         origin[r][0], origin[r][1], times[r].as_py()))
        drop[start + 1:end] = True
    return order[~drop], duplicates
