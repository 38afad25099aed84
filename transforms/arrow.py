"""Events <-> Arrow RecordBatches in the TFXIO convention (every column a large_list)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.records import Event
from transforms.decode import BYTES, FLOAT, INT

_ARROW_TYPES = {
    INT: pa.large_list(pa.int64()),
    FLOAT: pa.large_list(pa.float32()),
    BYTES: pa.large_list(pa.large_binary()),
}


def arrow_schema_for(types: dict[str, str]) -> pa.Schema:
    """Arrow schema of a prepared batch: the typed features, sorted by name."""
    return pa.schema([pa.field(name, _ARROW_TYPES[types[name]]) for name in sorted(types)])


def _as_list(value, kind):
    values = value if isinstance(value, list) else [value]
    if kind == BYTES:
        return [v if isinstance(v, bytes) else v.encode("utf-8") if isinstance(v, str) else str(v).encode("utf-8")
                for v in values]
    return values


_SCALAR_TYPES = {INT: {int, type(None)}, FLOAT: {float, type(None)}, BYTES: {str, bytes, type(None)}}
"""Python types of a column ``_scalar_column`` builds in C (bool, int in a FLOAT column, lists and
anything else take the per-value path, which handles them)."""


def _scalar_column(values: list, kind: str):
    """The large_list column of ``values`` (one scalar or None per row) built by Arrow from the flat
    values, or None when a value is not a plain scalar of the column's type. Equal to the per-value
    path's column: a one-value list per present value, a null list per absent one."""
    if not set(map(type, values)) <= _SCALAR_TYPES[kind]:
        return None
    flat = pa.array(values, type=_ARROW_TYPES[kind].value_type)
    valid = flat.is_valid()
    offsets = np.concatenate(([0], np.cumsum(valid.to_numpy(zero_copy_only=False), dtype=np.int64)))
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), flat.drop_null(), mask=pc.invert(valid))


def events_to_record_batch(events: Sequence[Event], feature_types: dict[str, str],
                           extra_columns: dict[str, list] | None = None) -> pa.RecordBatch:
    """One RecordBatch of ``events``; columns are the typed features (sorted by name), absent
    values are null lists. ``extra_columns`` (name -> one bytes value per event) are appended."""
    features = [e.features for e in events]
    columns = {name: [f.get(name) for f in features] for name in feature_types}
    return columns_to_record_batch(columns, feature_types, len(features), extra_columns)


def columns_to_record_batch(columns: dict[str, list], feature_types: dict[str, str], rows: int,
                            extra_columns: dict[str, list] | None = None) -> pa.RecordBatch:
    """The RecordBatch ``events_to_record_batch`` builds, from the features as columns (name ->
    one value or None per row); a typed feature missing from ``columns`` is absent in every row."""
    names = sorted(feature_types)
    arrays = []
    for name in names:
        kind = feature_types[name]
        values = columns.get(name)
        if values is None:
            values = [None] * rows
        column = _scalar_column(values, kind)
        if column is None:
            column = pa.array([None if v is None else _as_list(v, kind) for v in values], type=_ARROW_TYPES[kind])
        arrays.append(column)
    for name, values in (extra_columns or {}).items():
        names.append(name)
        arrays.append(pa.array([[v] for v in values], type=_ARROW_TYPES[BYTES]))
    return pa.RecordBatch.from_arrays(arrays, names)



def canonical_examples(serialized) -> list:
    """tf.Examples re-serialized with sorted map keys (protobuf's deterministic serialization).

    tfx_bsl's C++ encoder writes the feature map in hash order, which changes between processes;
    deterministic serialization makes the same rows give the same bytes on every run, which the
    idempotent window writer and the content digests rely on. ``example_encoding.deterministic_examples`` gives
    the same bytes from a RecordBatch without parsing every example again
    (transforms/example_encoding.py).
    """
    from tensorflow.core.example import example_pb2

    parse = example_pb2.Example.FromString
    return [parse(s).SerializeToString(deterministic=True) for s in serialized]
