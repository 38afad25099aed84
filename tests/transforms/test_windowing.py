from core.layout import window_id, window_id_start_ms, window_start_ms
from core.records import Event
from transforms.windowing import split_duplicates

H = 3_600_000
T0 = 1795737600000  # 2026-11-27T00:00Z


def ev(i, t, src="f", pos="1"):
    return Event(str(i), t, {"x": 1.0}, src, pos)


def test_window_ids_round_trip():
    assert window_id(T0) == "20261127T0000Z"
    assert window_id(window_start_ms(T0 + H + 5, 3600)) == "20261127T0100Z"
    assert window_id_start_ms("20261127T0100Z") == T0 + H
    assert window_id(window_start_ms(T0 + 44 * 60_000, 1800)) == "20261127T0030Z"


def test_split_duplicates_keeps_first_position_and_sorts():
    events = [ev("b", T0, "f", "9"), ev("a", T0), ev("b", T0, "f", "3")]
    kept, dupes = split_duplicates(events)
    assert [e.id for e in kept] == ["a", "b"]
    assert kept[1].position == "3"
    assert [(d.reason, d.position) for d in dupes] == [("duplicate_id", "9")]
    assert dupes[0].event_time_ms == T0


def test_a_very_long_duplicate_id_gives_a_short_detail():
    long_id = "x" * 100_000
    kept, dupes = split_duplicates([Event(long_id, 5, {}, "f", "1"), Event(long_id, 5, {}, "f", "2")])
    assert len(kept) == 1 and dupes[0].reason == "duplicate_id" and len(dupes[0].detail) < 200
    assert dupes[0].detail.endswith("f:1")


def test_window_ids_of_the_accepted_event_time_range_have_four_digit_years():
    for ms in (0, 253_402_300_799_999):
        wid = window_id(window_start_ms(ms, 3600))
        assert len(wid) == 14 and window_id_start_ms(wid) == window_start_ms(ms, 3600)
    assert window_id(window_start_ms(253_402_300_799_999, 3600)) == "99991231T2300Z"


def test_split_duplicates_orders_like_a_sort_by_id_source_and_position():
    import random

    from transforms.windowing import _position_key

    rng = random.Random(7)
    events = [Event(rng.choice("abcdefgh") * rng.randint(1, 2), T0 + i, {"x": float(i)}, rng.choice(["f1", "f0", "s3"]),
                    rng.choice([str(rng.randint(0, 120)), "p-" + str(rng.randint(0, 9))]))
              for i in range(400)]
    kept, dupes = split_duplicates(events)
    ordered = sorted(events, key=lambda e: (e.id, e.source, _position_key(e.position)))
    firsts = [e for n, e in enumerate(ordered) if n == 0 or ordered[n - 1].id != e.id]
    assert kept == firsts and len(kept) < len(events)
    assert [(d.source, d.position) for d in dupes] == [(e.source, e.position) for e in ordered if e not in firsts]
