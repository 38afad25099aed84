"""Arrow columns (of Parquet files) -> the plain values decoding reads, one rule per Arrow type.

============================================  ====================================================
Arrow type                                    value
============================================  ====================================================
bool                                          True / False (an INT feature holds 1 / 0)
int8 .. int64, uint8 .. uint64                int (a uint64 above int64's range is a
                                              ``value_out_of_range`` dead letter when decoded)
float16, float32, float64                     float
decimal128, decimal256                        float (float64: digits beyond its ~15-17
                                              significant digits are lost)
string, large_string                          str
binary, large_binary, fixed_size_binary       str when the bytes are UTF-8; otherwise the row is a
                                              ``not_utf8`` dead letter (BYTES features hold text)
timestamp[unit, tz]                           ISO-8601 text with the unit's digits of fraction,
                                              ending in ``Z`` when the column has a time zone (the
                                              instant, in UTC); without a time zone there is no
                                              suffix and ctpipe reads it as UTC
date32, date64                                ISO-8601 date ``YYYY-MM-DD`` (as an event time:
                                              midnight UTC)
dictionary<values: T>                         as T
list, large_list, fixed_size_list of these    list
null                                          null (the feature is absent)
============================================  ====================================================

A timestamp or date outside years 1..9999 becomes its epoch milliseconds (an int), which as an
event time is ``event_time_out_of_range``. Any other type (struct, map, time, duration...) makes
every row where the column is not null a ``type_mismatch`` dead letter naming the column and its
type. A file whose schema repeats a column name makes every row a ``duplicate_key`` dead letter.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable, Iterator, Optional

import pyarrow as pa
import pyarrow.compute as pc

_EPOCH = dt.datetime(1970, 1, 1)
_FRACTION_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}
_MS_PER_DAY = 86_400_000


def iso_timestamp(value: int, unit: str, utc: bool):
    """ISO-8601 text of ``value`` ``unit``s since the epoch, or its epoch ms past year 9999."""
    digits = _FRACTION_DIGITS[unit]
    seconds, fraction = divmod(value, 10 ** digits)
    try:
        text = (_EPOCH + dt.timedelta(seconds=seconds)).isoformat()
    except OverflowError:
        return value * 1000 // 10 ** digits
    if digits:
        text += f".{fraction:0{digits}d}"
    return text + ("Z" if utc else "")


def iso_date(days: int):
    """ISO-8601 date of ``days`` since the epoch, or its epoch ms outside years 1..9999."""
    try:
        return (_EPOCH + dt.timedelta(days=days)).date().isoformat()
    except OverflowError:
        return days * _MS_PER_DAY


def _plain(array: pa.Array, name: str):
    return array.to_pylist(), {}


def _half_floats(array: pa.Array, name: str):
    return [None if v is None else float(v) for v in array.to_pylist()], {}  # numpy float16 scalars


def _decimals(array: pa.Array, name: str):
    return pc.cast(array, pa.float64()).to_pylist(), {}


def _binaries(array: pa.Array, name: str):
    values, problems = [], {}
    for row, value in enumerate(array.to_pylist()):
        if value is None:
            values.append(None)
            continue
        try:
            values.append(value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            values.append(None)
            problems[row] = ("not_utf8", f"column {name!r}: binary value is not UTF-8 text ({exc.reason} at byte "
                                         f"{exc.start}); BYTES features hold text")
    return values, problems


def _timestamps(array: pa.Array, name: str):
    unit, utc = array.type.unit, array.type.tz is not None
    return [None if v is None else iso_timestamp(v, unit, utc) for v in pc.cast(array, pa.int64()).to_pylist()], {}


def _dates(array: pa.Array, name: str):
    if pa.types.is_date64(array.type):
        days = [None if v is None else v // _MS_PER_DAY for v in pc.cast(array, pa.int64()).to_pylist()]
    else:
        days = pc.cast(array, pa.int32()).to_pylist()
    return [None if d is None else iso_date(d) for d in days], {}


def _converter(arrow_type: pa.DataType) -> Optional[Callable]:
    t = pa.types
    if t.is_boolean(arrow_type) or t.is_integer(arrow_type) or t.is_null(arrow_type) or t.is_string(arrow_type) \
            or t.is_large_string(arrow_type) or arrow_type in (pa.float32(), pa.float64()):
        return _plain
    if arrow_type == pa.float16():
        return _half_floats
    if t.is_decimal(arrow_type):
        return _decimals
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type) or t.is_fixed_size_binary(arrow_type):
        return _binaries
    if t.is_timestamp(arrow_type):
        return _timestamps
    if t.is_date(arrow_type):
        return _dates
    return None


def _is_list(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
            or pa.types.is_fixed_size_list(arrow_type))


def _unsupported(array: pa.Array, name: str):
    problem = ("type_mismatch", f"column {name!r}: Arrow type {array.type} is not supported (see "
                                "transforms/arrow_values.py for the types ctpipe reads)")
    return [None] * len(array), {row: problem for row, valid in enumerate(array.is_valid().to_pylist()) if valid}


def _lists(array: pa.Array, name: str):
    items, item_problems = array_values(array.flatten(), name)
    values, problems, at = [], {}, 0
    for row, length in enumerate(pc.list_value_length(array).to_pylist()):
        if length is None:
            values.append(None)
            continue
        values.append(items[at:at + length])
        if item_problems:
            found = [item_problems[k] for k in range(at, at + length) if k in item_problems]
            if found:
                problems[row] = found[0]
        at += length
    return values, problems


def array_values(array: pa.Array, name: str) -> tuple[list, dict]:
    """(one value per row, {row: (reason, detail)} of rows the column makes unusable)."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if _is_list(array.type):
        return _lists(array, name)
    return (_converter(array.type) or _unsupported)(array, name)


def column_values(column: pa.ChunkedArray, name: str) -> tuple[list, dict]:
    values, problems = [], {}
    for chunk in column.chunks:
        chunk_values, chunk_problems = array_values(chunk, name)
        problems.update({len(values) + row: p for row, p in chunk_problems.items()})
        values.extend(chunk_values)
    return values, problems


def table_rows(table: pa.Table) -> Iterator[tuple[dict, Optional[tuple]]]:
    """(row as {column: value}, first problem of the row or None) for every row of ``table``;
    problems are looked for column by column in the file's order."""
    names = table.column_names
    repeated = sorted({n for n in names if names.count(n) > 1})
    file_problem = ("duplicate_key", f"the file's schema names column {repeated[0]!r} more than once") \
        if repeated else None
    columns, problems = [], {}
    for index, name in enumerate(names):
        values, column_problems = column_values(table.column(index), name)
        columns.append(values)
        for row, problem in column_problems.items():
            problems.setdefault(row, problem)
    for row in range(table.num_rows):
        yield {name: values[row] for name, values in zip(names, columns)}, file_problem or problems.get(row)
