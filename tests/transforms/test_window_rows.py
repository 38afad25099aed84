"""Columnar window preparation (transforms/window_rows.py, transforms/prepare.prepare_sorted)
against the record-level rules it replaces: ``split_duplicates(merge_records(...))`` on Event
tuples, and the window parts those records gave when built whole."""
import gzip
import random

import numpy as np
import pytest

from core.records import DeadLetter, Event
from transforms import window_parts
from transforms.arrow import events_to_record_batch
from transforms.example_encoding import deterministic_examples
from transforms.gzip_files import tfrecord_gz_bytes
from transforms.prepare import lags_of, prepare_sorted
from transforms.validate_windows import timeliness_of
from transforms.versions import PreviousVersion, merge_records, provenance_bytes
from transforms.window_parts import WindowParts
from transforms.window_rows import WindowRows
from transforms.windowing import split_duplicates
from transforms.write_window import example_hashes

TYPES = {"b": "BYTES", "f": "FLOAT", "i": "INT"}
IDS = ["a", "b", "ab", "é", "z\ud800", "\U0001f600", "ev-1", "ev-10", "ev-2", ""]
SOURCES = ["/in/x.jsonl", "/in/y.jsonl", "/in/\udcff-odd.jsonl", "kafka://t/0", "é/f"]
POSITIONS = ["1", "2", "9", "10", "100", "a", "b7", "07"]


def _event(rng: random.Random, rid=None, origin=None) -> Event:
    features = {}
    if rng.random() < 0.8:
        features["b"] = rng.choice(["x", b"y", ["p", "q"], [], "\u00e9"])
    if rng.random() < 0.8:
        features["f"] = rng.choice([1.5, -0.25, [0.5, 2.0], 3.0])
    if rng.random() < 0.8:
        features["i"] = rng.choice([1, -7, [2, 3, 4], 0])
    source, position = origin or (rng.choice(SOURCES), rng.choice(POSITIONS) + str(rng.randrange(50)))
    ingest = rng.choice([None, rng.randrange(10**6, 2 * 10**6)])
    return Event(rid if rid is not None else rng.choice(IDS) + str(rng.randrange(30)), rng.randrange(10**6),
                 features, source, position, ingest)


def _case(seed: int):
    rng = random.Random(seed)
    previous = [_event(rng) for _ in range(rng.randrange(0, 60))]
    previous = split_duplicates(merge_records(None, previous))[0]  # a sealed version: unique ids and origins
    events = [_event(rng) for _ in range(rng.randrange(1, 120))]
    for _ in range(rng.randrange(0, 10)):  # ids again from other origins
        events.append(_event(rng, rid=rng.choice(events).id))
    for _ in range(rng.randrange(0, 6)):  # the same record read twice
        events.append(rng.choice(events))
    for _ in range(min(len(previous), rng.randrange(0, 8))):  # previous records read again, maybe changed
        old = rng.choice(previous)
        events.append(_event(rng, rid=rng.choice([old.id, "new" + str(rng.randrange(9))]),
                             origin=(old.source, old.position)))
    dead = [DeadLetter("bad_json", "x", b"{", old.source, old.position)
            for old in rng.sample(previous, min(len(previous), rng.randrange(0, 5)))]
    rng.shuffle(events)
    return previous, events, dead


def _rows(events, chunk_rows=13) -> WindowRows:
    rows = WindowRows(TYPES)
    rows.add_all(events, chunk_rows)
    return rows


@pytest.mark.parametrize("seed", range(200))
def test_sorted_unique_keeps_and_rejects_what_the_record_rules_do(seed):
    previous, events, dead = _case(seed)
    kept, dupes = split_duplicates(merge_records(PreviousVersion(1, previous, {}) if previous else None, events, dead))

    got = _rows(events).sorted_unique(_rows(previous, 7) if previous else None, dead)

    assert got.features.equals(events_to_record_batch(kept, TYPES))
    keys = got.keys.to_pydict()
    assert [k.decode("utf-8", "surrogatepass") for k in keys["id"]] == [e.id for e in kept]
    assert [(s.decode("utf-8", "surrogatepass"), p.decode()) for s, p in zip(keys["source"], keys["position"])] \
        == [(e.source, e.position) for e in kept]
    assert keys["event_time_ms"] == [e.event_time_ms for e in kept]
    assert keys["ingest_time_ms"] == [e.ingest_time_ms for e in kept]
    assert got.duplicates == dupes


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("batch_rows", [1, 5, 8192])
def test_prepared_parts_are_those_of_the_whole_window(seed, batch_rows):
    previous, events, dead = _case(seed)
    kept, _ = split_duplicates(merge_records(None, events))
    described = {SOURCES[0]: {"uri": SOURCES[0], "bytes": 12}}

    pending = prepare_sorted(_rows(events).sorted_unique(), described, WindowParts(None), batch_rows)
    prepared = pending.finish()

    batch = events_to_record_batch(kept, TYPES)
    examples = deterministic_examples(batch)
    parts = prepared.parts
    assert parts.get(window_parts.RAW) == tfrecord_gz_bytes(examples)
    assert gzip.decompress(parts.get(window_parts.PROVENANCE)) == gzip.decompress(provenance_bytes(kept))
    assert parts.get(window_parts.PROVENANCE) == provenance_bytes(kept)
    assert parts.get(window_parts.HASHES) == example_hashes(examples)
    assert prepared.batch().equals(batch)
    assert prepared.records == len(kept)
    counts = {}
    for e in kept:
        counts[e.source] = counts.get(e.source, 0) + 1
    assert prepared.sources == [dict(described.get(s, {"uri": s}), records=n) for s, n in sorted(counts.items())]


@pytest.mark.parametrize("seed", range(20))
def test_lags_are_those_of_the_records_with_an_ingest_time(seed):
    _, events, _ = _case(seed)
    kept, _ = split_duplicates(merge_records(None, events))
    expected = [(e.ingest_time_ms - e.event_time_ms) / 1000.0 for e in kept if e.ingest_time_ms is not None]

    lags = lags_of(_rows(events).sorted_unique())

    assert lags.tolist() == expected
    assert timeliness_of(lags) == timeliness_of(expected)


def test_a_window_of_one_row_and_rows_without_ingest_times():
    one = [Event("only", 5, {"f": 1.0}, "s", "1")]
    got = _rows(one).sorted_unique()
    assert got.features.num_rows == 1 and got.duplicates == []
    assert lags_of(got).size == 0 and timeliness_of(lags_of(got)) is None
    assert np.array_equal(lags_of(got), np.zeros(0))


def test_previous_rows_all_read_again_as_dead_letters_leave_nothing():
    previous = [Event("p", 1, {}, "s", "1"), Event("q", 2, {}, "s", "2")]
    dead = [DeadLetter("bad_json", "x", None, "s", "1"), DeadLetter("bad_json", "x", None, "s", "2")]
    got = WindowRows(TYPES).sorted_unique(_rows(previous), dead)
    assert got.features.num_rows == 0 and got.keys.num_rows == 0


@pytest.mark.parametrize("seed", range(40))
def test_packed_rows_chunks_give_the_rows_of_their_events(seed):
    from transforms.window_rows import is_packed_rows, pack_rows

    _, events, _ = _case(seed)
    packed = WindowRows(TYPES)
    for start in range(0, len(events), 11):
        data = pack_rows(events[start:start + 11], TYPES)
        assert is_packed_rows(data)
        packed.add_packed(data)
    want = _rows(events)
    assert packed.sources == want.sources == {e.source for e in events}

    got, expected = packed.sorted_unique(), want.sorted_unique()

    assert got.features.equals(expected.features) and got.keys.equals(expected.keys)
    assert got.duplicates == expected.duplicates


def test_a_chunk_packed_under_another_schema_is_refused_by_name():
    from transforms.window_rows import is_packed_rows, pack_rows

    data = pack_rows([Event("a", 1, {"f": 1.0}, "s", "1")], {"f": "FLOAT"})
    with pytest.raises(ValueError, match="another schema"):
        WindowRows(TYPES).add_packed(data)
    assert not is_packed_rows(b"\x80\x05")  # a pack_records pickle
