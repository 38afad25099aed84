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
