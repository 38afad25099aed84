import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from core.records import DeadLetter, Event, SourceRecord
from transforms.decode import BYTES, FLOAT, INT, Decode, DecodeSpec, decode_record, parse_event_time

SPEC = DecodeSpec(event_time_field="ts", id_field="id",
                  feature_types={"x": FLOAT, "n": INT, "c": BYTES}, max_value_bytes=200)


def rec(raw, pos="1"):
    return SourceRecord("f.jsonl", pos, raw)


def test_parse_event_time_formats():
    assert parse_event_time("2026-11-27T01:00:00Z") == 1795741200000
    assert parse_event_time("2026-11-27T01:00:00+00:00") == 1795741200000
    assert parse_event_time("2026-11-27T01:00:00") == 1795741200000  # naive = UTC
    assert parse_event_time(1795741200) == 1795741200000
    assert parse_event_time(1795741200000) == 1795741200000
    assert parse_event_time(1795741200, "epoch_ms") == 1795741200
    with pytest.raises(ValueError):
        parse_event_time("yesterday")


def test_valid_record_is_typed():
    out = decode_record(rec(b'{"id": 7, "ts": "2026-11-27T01:00:00Z", "x": 3, "n": 2.0, "c": "a"}'), SPEC)
    assert isinstance(out, Event)
    assert out.id == "7" and out.features["x"] == 3.0 and isinstance(out.features["x"], float)
    assert out.features["n"] == 2 and isinstance(out.features["n"], int)


@pytest.mark.parametrize("raw, reason", [
    (None, "tombstone"),
    (b"\xff\xfe", "not_utf8"),
    (b'{"id": 1, "ts": ', "bad_json"),
    (b"[1, 2]", "not_object"),
    (b'{"ts": "2026-11-27T01:00:00Z"}', "missing_id"),
    (b'{"id": "a"}', "missing_event_time"),
    (b'{"id": "a", "ts": "soon"}', "bad_event_time"),
    (b'{"id": "a", "ts": 1795741200, "x": "hot"}', "type_mismatch"),
    (b'{"id": "a", "ts": 1795741200, "c": 5}', "type_mismatch"),
    (b'{"id": "a", "ts": 1795741200, "x": NaN}', "type_mismatch"),
    (b'{"id": "a", "ts": 1795741200, "c": "' + b"y" * 300 + b'"}', "oversize"),
])
def test_bad_records_become_dead_letters_with_reason_and_position(raw, reason):
    out = decode_record(rec(raw, "42"), SPEC)
    assert isinstance(out, DeadLetter)
    assert out.reason == reason
    assert out.source == "f.jsonl" and out.position == "42" and out.raw == raw
    assert out.detail


def test_type_mismatch_keeps_event_time_for_window_accounting():
    out = decode_record(rec(b'{"id": "a", "ts": 1795741200, "x": "hot"}'), SPEC)
    assert out.event_time_ms == 1795741200000
    assert "'x'" in out.detail


def test_decode_transform_routes_every_record_once():
    good = rec(b'{"id": "g", "ts": 1795741200, "x": 1.5}', "1")
    bad = rec(b"nope", "2")
    with TestPipeline() as p:
        events, dead = p | beam.Create([good, bad]) | Decode(SPEC)
        assert_that(events | "Ids" >> beam.Map(lambda e: e.id), equal_to(["g"]), label="events")
        assert_that(dead | "Reasons" >> beam.Map(lambda d: (d.reason, d.position)), equal_to([("bad_json", "2")]),
                    label="dead")


# --------------------------------------------------------------------------- one bad record is a dead letter

TS = b'"ts": "2026-11-27T01:00:00Z"'


def json_rec(body: bytes, pos="9", ingest_time_ms=None):
    return SourceRecord("f.jsonl", pos, b"{" + body + b"}", None, ingest_time_ms)


@pytest.mark.parametrize("raw, reason, words", [
    (b"[" * 50_000 + b"]" * 50_000, "bad_json", "nested too deeply"),
    (b'{"id": "a", "ts": 1795741200, "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "bad_json", "nested too deeply"),
    (b'{"id": "a", "ts": 1795741200, "n": 9223372036854775808}', "value_out_of_range", "'n'"),
    (b'{"id": "a", "ts": 1795741200, "n": -9223372036854775809}', "value_out_of_range", "int64"),
    (b'{"id": "a", "ts": 1795741200, "n": 1e300}', "value_out_of_range", "'n'"),
    (b'{"id": "a", "ts": 1795741200, "x": 1e39}', "value_out_of_range", "float32"),
    (b'{"id": "a", "ts": 1795741200, "x": -3.5e38}', "value_out_of_range", "'x'"),
    (b'{"id": "a", "ts": 1795741200, "x": 100000000000000000000000000000000000000000}', "value_out_of_range", "'x'"),
    (b'{"id": "a", "ts": 1795741200, "x": "1e400"}', "value_out_of_range", "'x'"),
    (b'{"id": "a", "ts": 1795741200, "x": Infinity}', "type_mismatch", "not finite"),
    (b'{"id": "a", "ts": 1795741200, "x": -Infinity}', "type_mismatch", "not finite"),
    (b'{"id": "a", "ts": 1795741200, "x": "NaN"}', "type_mismatch", "expected FLOAT"),
    (b'{"id": "a", "ts": 1795741200, "x": true}', "type_mismatch", "expected FLOAT, got bool"),
    (b'{"id": "a", "ts": 1795741200, "c": true}', "type_mismatch", "expected BYTES, got bool"),
    (b'{"id": "a", "ts": 1795741200, "n": 2.5}', "type_mismatch", "expected INT, got float"),
    (b'{"id": "a", "ts": 1795741200, "n": [[1], [2]]}', "type_mismatch", "nested lists"),
    (b'{"id": "a", "ts": 1795741200, "n": [1, null]}', "type_mismatch", "holds null"),
    (b'{"id": "a", "ts": 1795741200, "n": {"k": 1}}', "type_mismatch", "expected INT, got dict"),
    (b'{"id": "a", "ts": 1795741200, "new": {"k": 1}}', "type_mismatch", "flat list of scalars"),
    (b'{"id": "a", "ts": 1795741200, "c": "\\ud800"}', "not_utf8", "'c'"),
    (b'{"id": "a", "ts": 1795741200, "\\udc00": 1}', "not_utf8", "key"),
    (b'{"id": "a", "ts": 1795741200, "n": 1, "n": 2}', "duplicate_key", "'n'"),
    (b'{"id": "a", "ts": 1795741200, "n" : 1, "n"  :2}', "duplicate_key", "'n'"),
    (b'{"id": "a", "ts": 1795741200, "c": "x\\":", "n": 1, "n": 2}', "duplicate_key", "'n'"),
    (b'{"id": {"x": 1}, "ts": 1795741200}', "bad_id", "dict"),
    (b'{"id": 1.5, "ts": 1795741200}', "bad_id", "float"),
    (b'{"id": true, "ts": 1795741200}', "bad_id", "bool"),
    (b'{"id": [1], "ts": 1795741200}', "bad_id", "list"),
    (b'{"id": "\\ud800", "ts": 1795741200}', "bad_id", "Unicode"),
    (b'{"id": "", "ts": 1795741200}', "missing_id", "empty"),
])
def test_poison_values_become_dead_letters(raw, reason, words):
    out = decode_record(rec(raw, "42"), DecodeSpec("ts", "id", feature_types=SPEC.feature_types))
    assert isinstance(out, DeadLetter), out
    assert (out.reason, out.source, out.position, out.raw) == (reason, "f.jsonl", "42", raw)
    assert words in out.detail and len(out.detail) < 400


@pytest.mark.parametrize("ts, words", [
    (b"1795741200000000", "micro"),            # epoch microseconds (read as millis: year 58873)
    (b"1795741200000000000", "micro"),         # epoch nanoseconds
    (b'"1795741200000000"', "micro"),          # ... as numeric text
    (b"253402300800000", "outside"),           # 10000-01-01 in millis
    (b'"0999-06-01T00:00:00Z"', "0999-06-01"),  # 3-digit year: its window id would not be a window id
    (b'"1969-12-31T23:59:59Z"', "1969-12-31"),
    (b"-1", "outside"),
    (b"1e300", "outside"),
])
def test_impossible_event_times_are_out_of_range(ts, words):
    out = decode_record(rec(b'{"id": "a", "ts": ' + ts + b', "x": 1.0}'), SPEC)
    assert isinstance(out, DeadLetter) and out.reason == "event_time_out_of_range", out
    assert words in out.detail and "'ts'" in out.detail
    assert out.event_time_ms is None  # counts toward no window


def test_the_out_of_range_hint_names_the_configured_epoch_unit():
    out = decode_record(rec(b'{"id": "a", "ts": 1795741200000}'), DecodeSpec("ts", "id", event_time_format="epoch_s"))
    assert out.reason == "event_time_out_of_range" and "event_time.format epoch_s numbers are epoch seconds" in out.detail


def test_event_time_range_edges_are_valid():
    for ts, ms in ((b'"1970-01-01T00:00:00Z"', 0), (b'"9999-12-31T23:59:59.999Z"', 253_402_300_799_999)):
        out = decode_record(rec(b'{"id": "a", "ts": ' + ts + b'}'), SPEC)
        assert isinstance(out, Event) and out.event_time_ms == ms


def test_event_time_ahead_of_ingest_time_is_in_future_relative_to_the_record_not_now():
    ingest = parse_event_time("2026-11-27T00:00:00Z")
    spec = DecodeSpec("ts", "id", max_future_ms=86_400_000)
    far = json_rec(b'"id": "a", "ts": "2100-01-01T00:00:00Z"', ingest_time_ms=ingest)
    out = decode_record(far, spec)
    assert isinstance(out, DeadLetter) and out.reason == "event_time_in_future" and out.event_time_ms is None
    assert "2100-01-01" in out.detail and "2026-11-27" in out.detail and "max_future" in out.detail
    # within the bound: valid; old data (a replay of a 2019 topic) is valid whatever today is
    near = json_rec(b'"id": "a", "ts": "2026-11-27T23:59:00Z"', ingest_time_ms=ingest)
    assert isinstance(decode_record(near, spec), Event)
    old = json_rec(b'"id": "a", "ts": "2019-01-01T00:00:00Z"', ingest_time_ms=parse_event_time("2019-01-01T00:05:00Z"))
    assert isinstance(decode_record(old, spec), Event)
    # files have no ingest time: only the range rule applies
    assert isinstance(decode_record(json_rec(b'"id": "a", "ts": "2100-01-01T00:00:00Z"'), spec), Event)
    # Kafka records without a timestamp (-1) have no reference either
    assert isinstance(decode_record(json_rec(b'"id": "a", "ts": "2100-01-01T00:00:00Z"', ingest_time_ms=-1), spec),
                      Event)
    # the bound can be turned off
    assert isinstance(decode_record(far, DecodeSpec("ts", "id", max_future_ms=None)), Event)


def test_cycle_planning_time_bounds_a_producer_clock_that_runs_ahead():
    planned = parse_event_time("2026-11-27T00:00:00Z")
    ahead = json_rec(b'"id": "a", "ts": "2100-01-01T00:00:00Z"', ingest_time_ms=parse_event_time("2100-01-01T00:00:00Z"))
    out = decode_record(ahead, DecodeSpec("ts", "id", now_ms=planned))
    assert isinstance(out, DeadLetter) and out.reason == "event_time_in_future"


@pytest.mark.parametrize("raw, features", [
    (b'\xef\xbb\xbf{"id": "a", "ts": 1795741200, "n": 1}', {"n": 1}),                 # UTF-8 BOM
    (b'{"id": "a", "ts": 1795741200, "n": true, "m": false}', {"n": 1, "m": 0}),       # booleans in INT
    (b'{"id": "a", "ts": 1795741200, "n": 9223372036854775807}', {"n": 2 ** 63 - 1}),
    (b'{"id": "a", "ts": 1795741200, "n": "7", "x": "2.5e3"}', {"n": 7, "x": 2500.0}),  # numeric text
    (b'{"id": "a", "ts": 1795741200, "x": 3.4e38, "n": 4.0}', {"x": 3.4e38, "n": 4}),
    (b'{"id": "a", "ts": 1795741200, "x": [1, 2.5], "n": []}', {"x": [1.0, 2.5]}),    # [] is absent
    (b'{"id": "a", "ts": 1795741200, "c": "x\\": y", "n": 1}', {"c": 'x": y', "n": 1}),
])
def test_values_with_a_documented_rule_decode(raw, features):
    out = decode_record(rec(raw), SPEC)
    assert isinstance(out, Event), out
    assert {k: v for k, v in out.features.items() if k not in ("id", "ts")} == features


@pytest.mark.parametrize("raw_id, expected", [
    (b'"../../etc/passwd"', "../../etc/passwd"),
    (b'"a/b\\\\c:d"', "a/b\\c:d"),
    (b"-42", "-42"),
    (b'"' + b"i" * 100_000 + b'"', "i" * 100_000),
])
def test_ids_are_opaque_strings(raw_id, expected):
    out = decode_record(SourceRecord("f", "1", b'{"id": ' + raw_id + b', "ts": 1795741200}'), DecodeSpec("ts", "id"))
    assert isinstance(out, Event) and out.id == expected


def test_an_integer_id_beyond_int64_is_a_dead_letter_of_its_feature():
    out = decode_record(SourceRecord("f", "1", b'{"id": 12345678901234567890123, "ts": 1795741200}'),
                        DecodeSpec("ts", "id"))
    assert isinstance(out, DeadLetter) and out.reason == "value_out_of_range" and "'id'" in out.detail


def test_text_values_are_typed_by_their_form_before_a_schema_and_by_the_schema_after():
    fields = {"id": "r1", "ts": "2026-11-27T01:00:00Z", "t": "61.5", "n": "3", "zip": "01234", "c": "v1",
              "e": "1e3", "neg": "-2"}
    record = SourceRecord("f.csv", "2", b"...", fields, text_values=True)
    out = decode_record(record, DecodeSpec("ts", "id"))
    assert out.features == {"id": "r1", "ts": "2026-11-27T01:00:00Z", "t": 61.5, "n": 3, "zip": "01234", "c": "v1",
                            "e": 1000.0, "neg": -2}
    typed = decode_record(record, DecodeSpec("ts", "id", feature_types={"n": FLOAT, "zip": INT, "c": BYTES}))
    assert typed.features["n"] == 3.0 and isinstance(typed.features["n"], float) and typed.features["zip"] == 1234
    # JSON strings stay strings: their type is the JSON type
    assert decode_record(record._replace(text_values=False), DecodeSpec("ts", "id")).features["t"] == "61.5"


def test_reader_problems_and_oversize_rows_keep_their_reason_and_position():
    bad = SourceRecord("f.csv", "7", b"a,b", None, error=("bad_row", "3 columns, the header has 2"))
    out = decode_record(bad, SPEC)
    assert (out.reason, out.detail, out.position, out.raw) == ("bad_row", "3 columns, the header has 2", "7", b"a,b")
    big = SourceRecord("f.parquet", "3", b"x" * 300, {"id": "a", "ts": 1795741200})
    assert decode_record(big, SPEC).reason == "oversize"


def test_nested_objects_at_every_depth_near_the_recursion_limit_never_raise():
    # around the limit, the first parse may succeed where the duplicate-key check's second one fails
    for depth in [1, 100, *range(900, 1010), 5000]:
        raw = b'{"id": "a", "ts": 1795741200, "x": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
        out = decode_record(rec(raw), DecodeSpec("ts", "id"))
        assert isinstance(out, DeadLetter) and out.reason in ("bad_json", "type_mismatch"), depth
