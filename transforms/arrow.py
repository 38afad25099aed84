"""Events <-> Arrow RecordBatches in the TFXIO convention (every column a large_list)."""
from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from core.records import Event
from transforms.decode import BYTES, FLOAT, INT

_ARROW_TYPES = {
    INT: pa.large_list(pa.int64()),
    FLOAT: pa.large_list(pa.float32()),
    BYTES: pa.large_list(pa.large_binary()),
}


def _as_list(value, kind):
    values = value if isinstance(value, list) else [value]
    if kind == BYTES:
        return [v if isinstance(v, bytes) else v.encode("utf-8") if isinstance(v, str) else str(v).encode("utf-8")
                for v in values]
    return values


def events_to_record_batch(events: Sequence[Event], feature_types: dict[str, str],
                           extra_columns: dict[str, list] | None = None) -> pa.RecordBatch:
    """One RecordBatch of ``events``; columns are the typed features (sorted by name), absent
    values are null lists. ``extra_columns`` (name -> one bytes value per event) are appended."""
    names = sorted(feature_types)
    arrays = []
    for name in names:
        kind = feature_types[name]
        column = [(_as_list(e.features[name], kind) if name in e.features else None) for e in events]
        arrays.append(pa.array(column, type=_ARROW_TYPES[kind]))
    for name, values in (extra_columns or {}).items():
        names.append(name)
        arrays.append(pa.array([[v] for v in values], type=_ARROW_TYPES[BYTES]))
    return pa.RecordBatch.from_arrays(arrays, names)



def canonical_examples(serialized) -> list:
    """tf.Examples re-serialized with sorted map keys.

    tfx_bsl's C++ encoder writes the feature map in hash order, which changes between processes;
    deterministic serialization makes the same rows give the same bytes on every run, which the
    idempotent window writer and the content digests rely on.
    """
    from tensorflow.core.example import example_pb2

    parse = example_pb2.Example.FromString
    return [parse(s).SerializeToString(deterministic=True) for s in serialized]
