"""Unit tests of the version-merge rule (transforms/versions.py); the end-to-end runs are in
tests/pipeline/test_versions.py."""
from __future__ import annotations

import gzip
import json

from core.records import DeadLetter, Event
from transforms.versions import (
    PreviousVersion,
    dead_by_reason,
    merge_dead_counts,
    merge_records,
    provenance_bytes,
    read_tfrecords,
    unique_dead_letters,
)
from transforms.windowing import split_duplicates
from transforms.write_window import tfrecord_gz_bytes


def _ev(rid, source, position, value=1.0):
    return Event(rid, 1000, {"x": value}, source, position)


def test_read_tfrecords_reads_what_tensorflow_wrote():
    records = [b"", b"a", b"x" * 70_000, bytes(range(256))]
    assert read_tfrecords(tfrecord_gz_bytes(records)) == records


def test_read_tfrecords_refuses_a_truncated_file():
    data = gzip.decompress(tfrecord_gz_bytes([b"hello world"]))
    import pytest

    with pytest.raises(ValueError, match="truncated"):
        read_tfrecords(gzip.compress(data[:-6]))


def test_provenance_is_deterministic_and_row_aligned():
    events = [_ev("b", "f2", "7"), _ev("a", "f1", "3")]
    first, second = provenance_bytes(events), provenance_bytes(list(events))
    assert first == second
    doc = json.loads(gzip.decompress(first))
    assert doc["sources"] == ["f1", "f2"]
    assert [(r[0], doc["sources"][r[2]], r[3]) for r in doc["rows"]] == [("b", "f2", "7"), ("a", "f1", "3")]


def test_merge_keeps_previous_records_and_replaces_re_reads():
    previous = PreviousVersion(1, [_ev("a", "f1", "1"), _ev("b", "f1", "2"), _ev("c", "f2", "1")], {})
    new = [_ev("b", "f1", "2", value=9.0), _ev("d", "f3", "1")]
    merged = merge_records(previous, new)
    assert sorted((e.id, e.features["x"]) for e in merged) == [("a", 1.0), ("b", 9.0), ("c", 1.0), ("d", 1.0)]


def test_a_record_read_again_as_a_dead_letter_leaves_the_window():
    previous = PreviousVersion(1, [_ev("a", "f1", "1"), _ev("b", "f1", "2")], {})
    rejected = DeadLetter("range_violation", "humidity above 100", None, "f1", "2", 1000)
    assert [e.id for e in merge_records(previous, [_ev("a", "f1", "1")], [rejected])] == ["a"]


def test_a_record_read_twice_at_the_same_position_is_one_record():
    twice = [_ev("a", "kafka://t/0", "5"), _ev("b", "kafka://t/0", "6"), _ev("a", "kafka://t/0", "5")]
    kept, dupes = split_duplicates(merge_records(None, twice))
    assert [e.id for e in kept] == ["a", "b"] and dupes == []
    letter = DeadLetter("bad_json", "", None, "kafka://t/0", "7")
    assert unique_dead_letters([letter, letter._replace(detail="again")]) == [letter._replace(detail="again")]


def test_merge_then_dedupe_equals_one_run_over_all_sources():
    first_run = [_ev("a", "f1", "1"), _ev("b", "f1", "2")]
    second_run = [_ev("a", "f2", "1"), _ev("c", "f2", "2")]
    kept_once, dupes_once = split_duplicates(first_run + second_run)
    kept_first, _ = split_duplicates(first_run)
    kept, dupes = split_duplicates(merge_records(PreviousVersion(1, kept_first, {}), second_run))
    assert kept == kept_once and dupes == dupes_once


def test_dead_counts_of_read_sources_are_recounted_others_carried():
    previous = PreviousVersion(1, [], {"f1": {"bad_json": 2}, "f2": {"type_mismatch": 1, "duplicate_id": 1}})
    letters = [DeadLetter("bad_json", "", None, "f1", "9"), DeadLetter("missing_id", "", None, "f3", "1"),
               DeadLetter("duplicate_id", "", None, "f2", "4")]
    merged = merge_dead_counts(previous, letters, run_sources={"f1", "f3"})
    # f1 read again: its count is this run's (1, not 2 + 1); f2 not read: carried, plus the
    # duplicate this merge found among its records
    assert merged == {"f1": {"bad_json": 1}, "f2": {"duplicate_id": 2, "type_mismatch": 1},
                      "f3": {"missing_id": 1}}
    assert dead_by_reason(merged) == {"bad_json": 1, "duplicate_id": 2, "missing_id": 1, "type_mismatch": 1}
    assert merge_dead_counts(None, [], set()) == {}


def test_stored_values_are_read_as_the_current_schema_types_them():
    from tensorflow.core.example import example_pb2

    from transforms.versions import _example_features

    example = example_pb2.Example()
    example.features.feature["n"].int64_list.value.extend([3])
    example.features.feature["t"].bytes_list.value.extend([b"7", b"x"])
    example.features.feature["s"].bytes_list.value.extend([b"v1"])
    out = _example_features(example, {"n": "FLOAT", "t": "INT", "s": "BYTES", "absent": "INT"})
    assert out == {"n": [3.0], "s": [b"v1"]}  # "x" cannot be an INT: absent, as a missing value
