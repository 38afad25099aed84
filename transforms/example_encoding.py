"""RecordBatch rows -> serialized tf.Examples, deterministic, built for the whole batch at once.

The bytes are those of ``transforms.arrow.canonical_examples(RecordBatchToExamples(batch))``:
tfx_bsl's encoding of every row, re-serialized with protobuf's deterministic map order. That path
costs two C++ calls and a parse per row; here each row is laid out with numpy, column by column:

    Example      = 0x0A varint(len) Features-body
    Features-body = one map item per feature, in deterministic order (``entry_order``)
    map item     = 0x0A varint(len) [0x0A varint(len) key] [0x12 varint(len) Feature]
    Feature      = FloatList (0x12, packed float32) | Int64List (0x1A, packed varints)
                   | BytesList (0x0A, one length-delimited value per item)

A column with exactly one value in every row (the usual feature) is laid out here; any other
column (nulls, empty or longer lists) is encoded by tfx_bsl one column at a time, which gives its
map items as they are, and those are placed the same way. tests/transforms/test_example_encoding.py
holds the result to the canonical path on random batches.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_VARINT_LIMITS = np.array([1 << bits for bits in range(7, 64, 7)], np.uint64)


def varint_sizes(values: np.ndarray) -> np.ndarray:
    """Bytes of each unsigned value as a protobuf varint."""
    return np.searchsorted(_VARINT_LIMITS, values.astype(np.uint64, copy=False), side="right").astype(np.int64) + 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def entry_order(name: str) -> tuple:
    """Sort key of the map order of protobuf's deterministic serialization (upb, as pinned): keys
    compared byte by byte, and where one is a prefix of the other, the longer one first."""
    return tuple(name.encode("utf-8")) + (256,)


class _Layout:
    """The pieces every row is the concatenation of, in order: constants, varints, fixed-width
    values and variable-length slices of a buffer, each with its size per row."""

    def __init__(self, rows: int):
        self.rows = rows
        self.pieces: list = []

    def const(self, data: bytes) -> None:
        self.pieces.append(("const", data, len(data)))

    def varint(self, values: np.ndarray) -> None:
        values = values.astype(np.uint64, copy=False)
        if len(values) and values.min() == values.max():  # the same in every row: a constant
            self.const(_varint(int(values[0])))
            return
        self.pieces.append(("varint", values, varint_sizes(values)))

    def fixed(self, matrix: np.ndarray) -> None:
        self.pieces.append(("fixed", matrix, matrix.shape[1]))

    def slices(self, buffer: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
        self.pieces.append(("slices", (buffer, starts), lengths))

    def _coalesced(self) -> list:
        """The pieces with every run of constants and fixed-width values joined into one matrix
        (one scatter into the output instead of one per piece)."""
        out, run = [], []

        def close():
            if run:
                width = sum(size for _kind, _data, size in run)
                matrix = np.empty((self.rows, width), np.uint8)
                col = 0
                for kind, data, size in run:
                    matrix[:, col:col + size] = np.frombuffer(data, np.uint8) if kind == "const" else data
                    col += size
                out.append(("fixed", matrix, width))
                run.clear()

        for piece in self.pieces:
            if piece[0] in ("const", "fixed"):
                run.append(piece)
            else:
                close()
                out.append(piece)
        close()
        return out

    def build(self) -> list:
        pieces = self._coalesced()
        sizes = np.zeros(self.rows, np.int64)
        for _kind, _data, size in pieces:
            sizes += size
        row_starts = np.cumsum(sizes) - sizes
        out = np.empty(int(sizes.sum()), np.uint8)
        at = row_starts.copy()
        for kind, data, size in pieces:
            if kind == "fixed":
                if size:
                    out[at[:, None] + np.arange(size)] = data
            elif kind == "varint":
                rest = data.copy()
                for k in range(int(size.max())):
                    has = size > k
                    byte = (rest & np.uint64(0x7F)) | np.where(size > k + 1, np.uint64(0x80), np.uint64(0))
                    out[(at + k)[has]] = byte[has].astype(np.uint8)
                    rest >>= np.uint64(7)
            else:
                buffer, starts = data
                total = int(size.sum())
                if total:
                    before = np.cumsum(size) - size
                    within = np.arange(total, dtype=np.int64)
                    out[np.repeat(at - before, size) + within] = buffer[np.repeat(starts - before, size) + within]
            at = at + size
        data = out.tobytes()
        return [data[a:b] for a, b in zip(row_starts.tolist(), (row_starts + sizes).tolist())]


def _kind(value_type: pa.DataType):
    if value_type == pa.float32():
        return "float"
    if value_type == pa.int64():
        return "int"
    if value_type in (pa.binary(), pa.large_binary()):
        return "bytes"
    return None


def _one_value_per_row(column: pa.Array):
    """(kind, values) when every row of a list column holds exactly one value of a kind laid out
    here; None otherwise."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or column.null_count:
        return None
    kind = _kind(column.type.value_type)
    if kind is None or len(column) == 0:
        return None
    if pc.min_max(pc.list_value_length(column)).as_py() != {"min": 1, "max": 1}:
        return None
    return kind, column.flatten()


def _binary_slices(values: pa.Array):
    """(data buffer, starts, lengths) of a binary or large_binary array."""
    offset_type = np.int64 if pa.types.is_large_binary(values.type) else np.int32
    _validity, offsets, data = values.buffers()
    offsets = np.frombuffer(offsets, offset_type)[values.offset: values.offset + len(values) + 1].astype(np.int64)
    buffer = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return buffer, offsets[:-1], np.diff(offsets)


def _header_sizes(lengths: np.ndarray) -> np.ndarray:
    """Bytes before the map item in tfx_bsl's one-feature tf.Example of ``lengths`` bytes: the
    features field's tag and the varint of the rest's length (``length = 1 + size(rest) + rest``)."""
    head = np.zeros(len(lengths), np.int64)
    for size in range(1, 6):
        rest = lengths - 1 - size
        fits = (head == 0) & (rest >= 0) & (varint_sizes(np.maximum(rest, 0)) == size)
        head[fits] = 1 + size
    if (head == 0).any():
        raise ValueError("tfx_bsl returned a tf.Example whose length prefix does not add up")
    return head


def _column_items(layout: _Layout, name: str, column: pa.Array) -> np.ndarray:
    """Adds the pieces of this column's map item to ``layout``; returns the item's size per row."""
    rows = layout.rows
    key = name.encode("utf-8")
    key_field = b"\x0a" + _varint(len(key)) + key
    simple = _one_value_per_row(column)
    if simple is None:
        from tfx_bsl.coders import example_coder

        encoded = example_coder.RecordBatchToExamples(pa.RecordBatch.from_arrays([column], [name]))
        lengths = np.fromiter(map(len, encoded), np.int64, rows)
        head = _header_sizes(lengths)
        layout.slices(np.frombuffer(b"".join(encoded), np.uint8), np.cumsum(lengths) - lengths + head, lengths - head)
        return lengths - head
    kind, values = simple
    feature = _Layout(rows)  # the Feature's pieces, placed after the item's headers below
    if kind == "float":
        feature.const(b"\x12\x06\x0a\x04")
        feature.fixed(values.to_numpy(zero_copy_only=False).astype("<f4", copy=False).view(np.uint8).reshape(rows, 4))
        feature_len = np.full(rows, 8, np.int64)
    elif kind == "int":
        numbers = values.to_numpy(zero_copy_only=False).astype("<i8", copy=False).view(np.uint64)
        value_len = varint_sizes(numbers)
        feature.const(b"\x1a")
        feature.varint(value_len + 2)
        feature.const(b"\x0a")
        feature.varint(value_len)
        feature.varint(numbers)
        feature_len = value_len + 4
    else:
        buffer, starts, lengths = _binary_slices(values)
        list_len = 1 + varint_sizes(lengths) + lengths
        feature.const(b"\x0a")
        feature.varint(list_len)
        feature.const(b"\x0a")
        feature.varint(lengths)
        feature.slices(buffer, starts, lengths)
        feature_len = 1 + varint_sizes(list_len) + list_len
    entry_len = len(key_field) + 1 + varint_sizes(feature_len) + feature_len
    layout.const(b"\x0a")
    layout.varint(entry_len)
    layout.const(key_field + b"\x12")
    layout.varint(feature_len)
    layout.pieces.extend(feature.pieces)
    return 1 + varint_sizes(entry_len) + entry_len


def deterministic_examples(batch: pa.RecordBatch) -> list:
    """The rows of ``batch`` (list columns of float32, int64 or bytes, the TFXIO convention) as
    serialized tf.Examples: the bytes of ``canonical_examples(RecordBatchToExamples(batch))``."""
    rows, names = batch.num_rows, batch.schema.names
    if rows == 0:
        return []
    items = _Layout(rows)
    body = np.zeros(rows, np.int64)
    for i in sorted(range(len(names)), key=lambda i: entry_order(names[i])):
        body += _column_items(items, names[i], batch.column(i))
    layout = _Layout(rows)
    layout.const(b"\x0a")
    layout.varint(body)
    layout.pieces.extend(items.pieces)
    return layout.build()
