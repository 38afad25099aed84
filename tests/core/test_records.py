"""Packed records (core.records.pack_records): what crosses a shuffle comes back equal and typed."""
from core.records import DeadLetter, Event, pack_records, unpack_records


def _events():
    return [Event("a", 1, {"t": 1.5, "tags": ["x", "y"], "n": None}, "f.jsonl", "3", None),
            Event("b/../c", 2, {"blob": b"\x00\xff", "big": 2 ** 62}, "kafka://t/0", "17", 99)]


def test_records_come_back_equal_in_order_and_of_their_own_types():
    dead = [DeadLetter("bad_json", "line 4 is not JSON", b"{", "f.jsonl", "4"),
            DeadLetter("type_mismatch", "t", None, "f.jsonl", "5", 7)]
    events, dead_back = unpack_records([pack_records(_events(), dead), pack_records(_events()[:1])])
    assert events == _events() + _events()[:1] and dead_back == dead
    assert all(type(e) is Event for e in events) and all(type(d) is DeadLetter for d in dead_back)
    assert events[1].features["blob"] == b"\x00\xff" and events[1].ingest_time_ms == 99


def test_no_payload_or_empty_payloads_give_no_records():
    assert unpack_records([]) == ([], [])
    assert unpack_records([pack_records([], [])]) == ([], [])
