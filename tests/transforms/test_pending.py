"""Per-window dead-letter indexes of ``ctpipe stream``: written at ingest beside the window's parts,
and the only thing sealing reads to count a window's ingest dead letters."""
from __future__ import annotations

import datetime as dt

import apache_beam as beam

from core import layout, storage
from core.records import DeadLetter, Event
from transforms import pending
from transforms.kafka.source import OffsetRange, source_uri

SID = "kafka-sensors"
SIZE_S = 3600
T0 = int(dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc).timestamp() * 1000)


def _dead(partition: int, offset: int, when, topic: str = "sensors") -> DeadLetter:
    return DeadLetter("type_mismatch", "temperature: 'hot' is not a FLOAT", b"{}", source_uri(topic, partition),
                      str(offset), when)


def test_write_pending_parts_indexes_dead_letters_by_window(tmp_path):
    root = str(tmp_path)
    ranges = (OffsetRange("sensors", 0, 0, 10), OffsetRange("sensors", 0, 10, 20))
    settings = pending.PartSettings(root, SID, SIZE_S, None, pending.NEW_VERSION, "20261127")
    events = [Event(f"e{i}", T0 + i * 60_000, {"x": 1.0}, source_uri("sensors", 0), str(i)) for i in (0, 1, 12)]
    dead = [_dead(0, 2, T0 + 5), _dead(0, 3, T0 + SIZE_S * 1000 + 5), _dead(0, 13, T0 + 7), _dead(0, 4, None)]
    with beam.Pipeline() as p:
        pcs = (p | "E" >> beam.Create(events), p | "D" >> beam.Create(dead))
        _ = pcs | pending.WritePendingParts(settings, ranges)
    first, second = layout.window_id(T0), layout.window_id(T0 + SIZE_S * 1000)
    counted = pending.ingest_dead_letters(root, SID, [first])
    assert sorted(d.position for d in counted) == ["13", "2"]
    assert all(d.raw is None and d.event_time_ms is not None for d in counted)
    assert [d.position for d in pending.ingest_dead_letters(root, SID, [second])] == ["3"]
    # the dead letter without an event time is in the range's dead-letter file only
    all_dead = storage.read_bytes(pending.deadletter_path(root, SID, "20261127", ranges[0])).decode()
    assert all_dead.count("\n") == 3 and '"position": "4"' in all_dead
    assert set(pending.list_parts(root, SID)) == {first}  # indexes are not parts


def test_sealing_reads_only_the_sealed_windows_index_not_old_or_other_topics_dead_letters(tmp_path, monkeypatch):
    root = str(tmp_path)
    settings = pending.PartSettings(root, SID, SIZE_S, None, pending.NEW_VERSION, "20261127")
    other = pending.PartSettings(root, SID + "-b", SIZE_S, None, pending.NEW_VERSION, "20261127")
    # 48 old windows of history, each with its dead letters, also for topic "sensors-b", whose
    # source id has this one's as a prefix
    for hour in range(48):
        when = T0 + hour * SIZE_S * 1000
        rng = OffsetRange("sensors", 0, hour * 10, hour * 10 + 10)
        wid = layout.window_id(when)
        for s, topic in ((settings, "sensors"), (other, "sensors-b")):
            rng_t = OffsetRange(topic, 0, rng.start, rng.end)
            list(pending._write_dead(((topic, 0, rng.start, rng.end), [_dead(0, rng.start, when, topic)]), s))
            list(pending._write_dead_index(((wid, topic, 0, rng.start, rng.end), [_dead(0, rng.start, when, topic)]),
                                           s))
            assert storage.exists(pending.dead_index_path(root, s.source_id, wid, rng_t))
    newest = layout.window_id(T0 + 47 * SIZE_S * 1000)
    opened, listed = [], []
    real_read, real_glob = storage.read_bytes, storage.glob
    monkeypatch.setattr(storage, "read_bytes", lambda path: opened.append(path) or real_read(path))
    monkeypatch.setattr(storage, "glob", lambda pattern: listed.append(pattern) or real_glob(pattern))
    counted = pending.ingest_dead_letters(root, SID, [newest])
    assert [d.position for d in counted] == ["470"] and counted[0].source == source_uri("sensors", 0)
    assert opened == [pending.dead_index_path(root, SID, newest, OffsetRange("sensors", 0, 470, 480))]
    assert listed == [storage.join(layout.pending_dir(root, SID), newest, "*" + pending.DEAD_INDEX_SUFFIX)]


def test_sealing_lists_only_the_parts_of_the_windows_it_seals(tmp_path, monkeypatch):
    root = str(tmp_path)
    wids = [layout.window_id(T0 + h * SIZE_S * 1000) for h in range(3)]
    for h, wid in enumerate(wids):
        rng = OffsetRange("sensors", 0, h * 10, h * 10 + 10)
        storage.write_bytes_atomic(pending.part_path(root, SID, wid, rng), pending.encode_part([]))
    listed = []
    real_glob = storage.glob
    monkeypatch.setattr(storage, "glob", lambda pattern: listed.append(pattern) or real_glob(pattern))
    parts = pending.window_parts(root, SID, [wids[1]])
    assert [(wid, [p.range.start for p in ps]) for wid, ps in parts.items()] == [(wids[1], [10])]
    assert listed == [storage.join(layout.pending_dir(root, SID), wids[1], "*" + pending.PART_SUFFIX)]
