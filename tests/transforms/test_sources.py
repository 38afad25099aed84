"""Readers on real files: every line or row comes out once, bad ones with their problem and position."""
from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.records import DeadLetter, Event
from transforms.arrow_values import array_values
from transforms.decode import BYTES, FLOAT, INT, DecodeSpec, decode_record
from transforms.sources import read_csv, read_jsonl, read_parquet


def decoded(records, types=None):
    spec = DecodeSpec("ts", "id", feature_types=types or {})
    return [decode_record(r, spec) for r in records]


# --------------------------------------------------------------------------- JSONL


def test_jsonl_bom_crlf_blank_lines_and_an_oversize_line(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "ts": 1795741200}\r\n'
                     b"\r\n"
                     b"   \n"
                     b'{"id": "b", "ts": 1795741200, "c": "' + b"y" * 500 + b'"}\r\n'
                     b'{"id": "c", "ts": 1795741200}')  # no newline at the end
    records = list(read_jsonl(str(path), max_bytes=200))
    assert [r.position for r in records] == ["1", "4", "5"]
    out = decoded(records)
    assert [o.id for o in out if isinstance(o, Event)] == ["a", "c"]
    big = out[1]
    assert isinstance(big, DeadLetter) and big.reason == "oversize" and "539 bytes" in big.detail
    assert len(big.raw) == 200


# --------------------------------------------------------------------------- CSV


def test_csv_rows_keep_raw_bytes_and_first_line_and_are_typed_by_their_values(tmp_path):
    path = tmp_path / "e.csv"
    path.write_bytes(b'\xef\xbb\xbfid,ts,temperature,label,firmware,note\r\n'
                     b'e1,2026-11-27T00:01:00Z,61.5,1,v1,plain\r\n'
                     b"\r\n"
                     b'e2,2026-11-27T00:02:00Z,60,0,v2,"two\r\nlines, with comma"\r\n'
                     b'e3,2026-11-27T00:03:00Z,,0,v1,\r\n')
    records = list(read_csv(str(path)))
    assert [(r.position, r.raw[:2]) for r in records] == [("2", b"e1"), ("4", b"e2"), ("6", b"e3")]
    assert records[1].raw == b'e2,2026-11-27T00:02:00Z,60,0,v2,"two\r\nlines, with comma"\r'
    e1, e2, e3 = decoded(records)
    assert e1.features == {"id": "e1", "ts": "2026-11-27T00:01:00Z", "temperature": 61.5, "label": 1,
                           "firmware": "v1", "note": "plain"}
    assert e2.features["note"] == "two\r\nlines, with comma" and e2.features["temperature"] == 60
    assert "temperature" not in e3.features and "note" not in e3.features  # empty is null
    # with a schema, the schema's types win: 60 becomes a FLOAT
    typed = decoded(records, {"temperature": FLOAT, "label": INT, "firmware": BYTES})
    assert typed[1].features["temperature"] == 60.0 and isinstance(typed[1].features["temperature"], float)


def test_csv_bad_rows_are_dead_letters_and_reading_goes_on(tmp_path):
    path = tmp_path / "e.csv"
    rows = [b"id,ts,x",
            b"a1,1795741200,1.5",
            b"a2,1795741200",                               # 2 columns
            b'a3,1795741200,"1.5"x',                        # text after a closing quote
            b"a4,1795741200,\xff\xfe",                      # not UTF-8
            b"a5,1795741200," + b"9" * 200_000,             # field over the csv module's limit
            b"a6,1795741200,2.5",
            b"a7,1795741200," + b"1" * 600,                 # 1.1e599: beyond FLOAT; over max_bytes below
            b"a8,1795741200,3.5",
            b'a9,1795741200,"never closed',                 # unterminated quote to the end of the file
            b"a10,1795741200,4.5"]
    path.write_bytes(b"\n".join(rows) + b"\n")
    records = list(read_csv(str(path), max_bytes=250_000))
    out = decoded(records, {"x": FLOAT})
    good = [o.id for o in out if isinstance(o, Event)]
    dead = [(o.position, o.reason) for o in out if isinstance(o, DeadLetter)]
    assert good == ["a1", "a6", "a8"]
    assert dead == [("3", "bad_row"), ("4", "bad_row"), ("5", "not_utf8"), ("6", "bad_row"),
                    ("8", "value_out_of_range"), ("10", "bad_row")]
    assert out[-1].raw == b'a9,1795741200,"never closed\na10,1795741200,4.5'
    small = [(r.position, r.error[0]) for r in read_csv(str(path), max_bytes=500) if r.error]
    assert ("8", "oversize") in small and ("6", "oversize") in small


def test_csv_header_rules(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("id,ts,x,x\na,1795741200,1,2\n")
    [only] = decoded(read_csv(str(dup)))
    assert only.reason == "duplicate_key" and "'x'" in only.detail
    pandas_index = tmp_path / "index.csv"
    pandas_index.write_text(",id,ts,x\n0,a,1795741200,1.5\n1,b,1795741200,2.5\n")
    out = decoded(read_csv(str(pandas_index)))
    assert [o.features for o in out] == [{"id": "a", "ts": 1795741200, "x": 1.5}, {"id": "b", "ts": 1795741200, "x": 2.5}]
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert list(read_csv(str(empty))) == []


# --------------------------------------------------------------------------- Parquet


def _parquet(tmp_path, columns: dict, name="e.parquet"):
    path = tmp_path / name
    pq.write_table(pa.table(columns), str(path), version="2.6")  # 2.6 keeps nanosecond timestamps
    return str(path)


def test_parquet_arrow_types_become_values_decoding_reads(tmp_path):
    ts = [dt.datetime(2026, 11, 27, 1, 0, 0, 123456), dt.datetime(2026, 11, 27, 2, 30)]
    path = _parquet(tmp_path, {
        "id": pa.array(["a", "b"], pa.large_string()),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "ts_ns": pa.array([1_795_741_200_123_456_789, None], pa.timestamp("ns", tz="Europe/Paris")),
        "ts_ms_naive": pa.array([1_795_741_200_000, 1_795_741_200_001], pa.timestamp("ms")),
        "ts_s": pa.array([1_795_741_200, 0], pa.timestamp("s", tz="UTC")),
        "day": pa.array([dt.date(2026, 11, 27), dt.date(1999, 1, 2)], pa.date32()),
        "day64": pa.array([dt.date(2026, 11, 27), None], pa.date64()),
        "price": pa.array([decimal.Decimal("12.34"), decimal.Decimal("-0.01")], pa.decimal128(10, 2)),
        "flag": pa.array([True, False]),
        "i8": pa.array([-128, 127], pa.int8()),
        "u64": pa.array([2 ** 63 - 1, 5], pa.uint64()),
        "f32": pa.array([0.5, 1.25], pa.float32()),
        "f64": pa.array([0.1, None], pa.float64()),
        "name": pa.array(["v1", "v2"]).dictionary_encode(),
        "blob": pa.array([b"text", None], pa.binary()),
        "fixed": pa.array([b"ab", b"cd"], pa.binary(2)),
        "tags": pa.array([["x", "y"], None], pa.list_(pa.string())),
        "nums": pa.array([[1, 2], [3]], pa.large_list(pa.int32())),
        "pair": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float64(), 2)),
        "nothing": pa.array([None, None], pa.null()),
    })
    a, b = decoded(read_parquet(path))
    assert isinstance(a, Event) and isinstance(b, Event), (a, b)
    assert a.event_time_ms == 1_795_741_200_123 and b.event_time_ms == 1_795_746_600_000
    assert a.features == {
        "id": "a", "ts": "2026-11-27T01:00:00.123456Z", "ts_ns": "2026-11-27T01:00:00.123456789Z",
        "ts_ms_naive": "2026-11-27T01:00:00.000", "ts_s": "2026-11-27T01:00:00.000Z", "day": "2026-11-27",
        "day64": "2026-11-27", "price": 12.34, "flag": 1, "i8": -128, "u64": 2 ** 63 - 1, "f32": 0.5,
        "f64": 0.1, "name": "v1", "blob": "text", "fixed": "ab", "tags": ["x", "y"], "nums": [1, 2],
        "pair": [1.0, 2.0]}
    assert b.features["ts_s"] == "1970-01-01T00:00:00.000Z" and b.features["day"] == "1999-01-02"
    assert "ts_ns" not in b.features and "blob" not in b.features and "tags" not in b.features
    assert b.features["price"] == -0.01 and b.features["flag"] == 0


def test_half_floats_and_out_of_range_temporal_values():
    # pyarrow 10 cannot write float16 to Parquet, other writers can: the column conversion is the same
    values, problems = array_values(pa.array(np.array([1.5, -2.0], dtype=np.float16)), "h")
    assert values == [1.5, -2.0] and all(type(v) is float for v in values) and problems == {}
    assert array_values(pa.array([1], pa.timestamp("s", tz="UTC")), "t")[0] == ["1970-01-01T00:00:01Z"]
    values, _ = array_values(pa.array([253_402_300_800, -62_135_596_801], pa.timestamp("s")), "t")
    assert values == [253_402_300_800_000, -62_135_596_801_000]  # epoch ms: out of range as an event time
    values, _ = array_values(pa.array([2_932_897, None], pa.date32()), "d")
    assert values == [2_932_897 * 86_400_000, None]


def test_parquet_event_time_columns_of_every_unit_and_a_date(tmp_path):
    for arrow_type, value in ((pa.timestamp("s"), 1_795_741_200), (pa.timestamp("ms", tz="UTC"), 1_795_741_200_000),
                              (pa.timestamp("us", tz="America/New_York"), 1_795_741_200_000_000),
                              (pa.timestamp("ns", tz="UTC"), 1_795_741_200_000_000_000)):
        path = _parquet(tmp_path, {"id": ["a"], "ts": pa.array([value], arrow_type)}, f"{arrow_type.unit}.parquet")
        [event] = decoded(read_parquet(path))
        assert event.event_time_ms == 1_795_741_200_000, arrow_type
    path = _parquet(tmp_path, {"id": ["a"], "ts": pa.array([dt.date(2026, 11, 27)], pa.date32())}, "d.parquet")
    assert decoded(read_parquet(path))[0].event_time_ms == 1_795_737_600_000


def test_parquet_values_that_cannot_be_features_are_dead_letters_per_row(tmp_path):
    path = _parquet(tmp_path, {
        "id": ["a", "b", "c", "d", "e"],
        "ts": pa.array([1_795_741_200, 1_795_741_200, 1_795_741_200, 253_402_300_800, 1_795_741_200],
                       pa.timestamp("s", tz="UTC")),
        "blob": pa.array([b"ok", b"\xff", None, None, None]),
        "u": pa.array([1, 1, 2 ** 64 - 1, 1, 1], pa.uint64()),
        "f": pa.array([1.0, 1.0, 1.0, 1.0, float("nan")]),
        "s": pa.array([None, None, None, None, None], pa.struct([("k", pa.int64())])),
    })
    out = decoded(read_parquet(path))
    assert [(o.position, getattr(o, "reason", None)) for o in out] == [
        ("0", None), ("1", "not_utf8"), ("2", "value_out_of_range"), ("3", "event_time_out_of_range"),
        ("4", "type_mismatch")]
    assert "'blob'" in out[1].detail and "'u'" in out[2].detail
    structs = _parquet(tmp_path, {"id": ["a"], "ts": [1_795_741_200], "s": pa.array([{"k": 1}])}, "s.parquet")
    [dead] = decoded(read_parquet(structs))
    assert dead.reason == "type_mismatch" and "column 's'" in dead.detail and "struct" in dead.detail
    assert dead.position == "0" and dead.source.endswith("s.parquet")


def test_physical_lines_at_every_chunk_boundary(monkeypatch):
    """Lines (cut to max_bytes + 1, with their full length) are the same whatever the read size:
    lines that run across one or many chunks, empty lines, a last line without its newline."""
    import io
    import random

    from transforms import sources

    rng = random.Random(4)
    for _ in range(300):
        data = b"".join(rng.choice([b"\n", b"\r\n", b"a", b"bc", b" ", b"x" * rng.randint(1, 40)])
                        for _ in range(rng.randint(0, 40)))
        max_bytes = rng.randint(1, 12)
        pieces = data.split(b"\n")
        if pieces[-1] == b"":
            pieces.pop()  # a newline ends the last line; it does not start another
        want = [(p[:max_bytes + 1], len(p)) for p in pieces]
        for chunk in (1, 2, 3, 7, 64):
            monkeypatch.setattr(sources, "_CHUNK_BYTES", chunk)
            assert list(sources.physical_lines(io.BytesIO(data), max_bytes)) == want, (data, chunk, max_bytes)
