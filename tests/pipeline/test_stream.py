"""Unit tests of ``ctpipe stream``'s pure parts: planning, watermark, sealing choice, checkpoint
store, storage-root lease refusals, pending part names and encoding. No broker needed."""
from __future__ import annotations

import json
import os

import pytest

from core.errors import ConfigError, InputError, LockError, StorageError
from core.layout import window_id_start_ms
from core.lock import StorageLock
from core.records import Event
from pipeline.checkpoint import Checkpoint, CheckpointStore, source_id
from pipeline.stream import CyclePlan, compute_watermark, idle_partitions, merge_newest, plan_cycle, windows_to_seal
from transforms.kafka.source import OffsetRange
from transforms.pending import RangeIndex, deadletter_path, decode_part, encode_part, parse_part_path, part_path

H = 3_600_000


# --------------------------------------------------------------------------- planning


def test_plan_starts_new_partitions_at_their_beginning_and_caps_the_cycle():
    cp = Checkpoint(topic="t", offsets={0: 10}, cycle=4, watermark_ms=123)
    plan = plan_cycle(cp, begin={0: 0, 1: 5, 2: 0}, end={0: 110, 1: 25, 2: 0}, topic="t",
                      max_records_per_split=30, max_records_per_cycle=100, date="20261127")
    assert plan.cycle == 5 and plan.watermark_before_ms == 123
    # two partitions have data: 50 records each at most
    assert plan.ends == {0: 60, 1: 25, 2: 0}
    assert plan.ranges == (OffsetRange("t", 0, 10, 40), OffsetRange("t", 0, 40, 60), OffsetRange("t", 1, 5, 25))
    assert plan.records == 70


def test_plan_round_trips_through_json_unchanged():
    plan = plan_cycle(Checkpoint(topic="t"), {0: 0, 1: 0}, {0: 7, 1: 3}, "t", 2, 1000, "20261127")
    assert CyclePlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_plan_with_nothing_new_is_empty():
    plan = plan_cycle(Checkpoint(topic="t", offsets={0: 7}), {0: 0}, {0: 7}, "t", 10, 10, "d")
    assert plan.ranges == () and plan.ends == {0: 7}


@pytest.mark.parametrize("offsets,begin,end,match", [
    ({0: 3}, {0: 5}, {0: 9}, "deleted by retention"),
    ({0: 12}, {0: 0}, {0: 9}, "recreated"),
])
def test_plan_refuses_offsets_outside_the_partition(offsets, begin, end, match):
    with pytest.raises(InputError, match=match):
        plan_cycle(Checkpoint(topic="t", offsets=offsets), begin, end, "t", 10, 10, "d")


def test_plan_rejects_a_zero_cycle_size():
    with pytest.raises(ConfigError, match="max-records-per-cycle"):
        plan_cycle(Checkpoint(topic="t"), {0: 0}, {0: 1}, "t", 10, 0, "d")


# --------------------------------------------------------------------------- watermark and sealing


def test_watermark_is_the_slowest_partition_minus_lateness_and_never_moves_back():
    newest = {0: 10 * H, 1: 4 * H, 2: 7 * H}
    assert compute_watermark(newest, 900, None) == 4 * H - 900_000
    assert compute_watermark(newest, 900, 5 * H) == 5 * H
    assert compute_watermark({}, 900, None) is None
    assert compute_watermark({}, 900, 42) == 42


def test_idle_partitions_stop_holding_the_watermark_back_only_when_configured():
    newest = {0: 4 * H, 1: 9 * H}
    last = {0: 1000.0, 1: 4000.0}
    assert idle_partitions(last, 4000.0, None) == set()  # off by default
    assert idle_partitions(last, 4000.0, 1800) == {0}
    assert compute_watermark(newest, 900, None, frozenset({0})) == 9 * H - 900_000
    assert compute_watermark(newest, 900, None, frozenset()) == 4 * H - 900_000
    # all partitions idle: nothing is left to say time moved on except their own data
    assert compute_watermark(newest, 900, None, frozenset({0, 1})) == 4 * H - 900_000


def test_idle_timeout_is_validated_and_kept_in_the_checkpoint(tmp_path):
    from pipeline.config import config_from_dict

    with pytest.raises(ConfigError, match="idle_partition_timeout"):
        config_from_dict({"source": {"kafka": {"idle_partition_timeout": "soon"}}})
    kafka = config_from_dict({"source": {"kafka": {"idle_partition_timeout": "30m"}}}).source.kafka
    assert kafka.idle_timeout_s() == 1800
    store = CheckpointStore(str(tmp_path), "t")
    store.save(Checkpoint("t", offsets={0: 5}, last_records_at={0: 123.5}))
    assert store.load().last_records_at == {0: 123.5}


def test_merge_newest_keeps_the_maximum_per_partition():
    assert merge_newest({0: 5, 1: 9}, {1: 3, 2: 4}) == {0: 5, 1: 9, 2: 4}


def test_windows_to_seal_takes_newly_passed_windows_and_late_touched_ones():
    wids = ["20261127T0000Z", "20261127T0100Z", "20261127T0200Z", "20261127T0300Z"]
    base = window_id_start_ms(wids[0])
    before, after = base + 2 * H, base + 3 * H + 1  # windows 0-1 sealed before; window 2 passes now
    assert windows_to_seal(wids, set(), 3600, before, after) == ["20261127T0200Z"]
    # late parts for window 0: resealed; window 3 (end 4h) not yet passed even if touched
    assert windows_to_seal(wids, {wids[0], wids[3]}, 3600, before, after) == [wids[0], wids[2]]
    assert windows_to_seal(wids, set(wids), 3600, None, None) == []
    assert windows_to_seal(wids, set(), 3600, None, base + H) == [wids[0]]  # end == watermark seals


# --------------------------------------------------------------------------- checkpoint store


def test_checkpoint_store_round_trip_and_empty_start(tmp_path):
    store = CheckpointStore(str(tmp_path), "my.topic/x")
    assert store.path.endswith("checkpoints/kafka-my.topic_x.json")
    assert store.load() == Checkpoint(topic="my.topic/x")
    cp = Checkpoint(topic="my.topic/x", offsets={0: 5, 3: 9}, max_event_time_ms={0: 1}, watermark_ms=-5,
                    cycle=2, in_flight={"cycle": 3}, late_records={"new_version": 2})
    store.save(cp)
    assert store.load() == cp
    assert not [p for p in os.listdir(tmp_path / "checkpoints") if ".tmp-" in p]


def test_checkpoint_store_names_the_file_and_fix_when_corrupt(tmp_path):
    store = CheckpointStore(str(tmp_path), "t")
    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "kafka-t.json").write_text('{"format": "other"}')
    with pytest.raises(StorageError, match="kafka-t.json.*move it away"):
        store.load()
    (tmp_path / "checkpoints" / "kafka-t.json").write_text('{"format": "ctpipe.checkpoint/1", "topic": "t"}')
    with pytest.raises(StorageError, match="missing or malformed"):
        store.load()


def test_source_id_is_file_name_safe():
    assert source_id("a/b c") == "kafka-a_b_c"


# --------------------------------------------------------------------------- lease
# tests/core/test_lock.py covers the lease itself (races, takeover, fencing, S3, GCS).


def test_checkpoint_save_is_refused_once_the_lease_was_taken_over(tmp_path):
    from core.errors import FencedError
    from core.lease_stores import LocalLeaseStore

    store = CheckpointStore(str(tmp_path), "ev")
    lock = StorageLock(str(tmp_path), heartbeat_s=10).acquire()
    try:
        store.save(Checkpoint(topic="ev", cycle=1), fence=lock)
        leases = LocalLeaseStore(lock.path)
        version, record = leases.read()
        leases.replace(version, dict(record, token=record["token"] + 1, holder="taker", write_id="w"))
        # The holder's renewal has not run yet: only the stored token shows the takeover.
        with pytest.raises(FencedError, match=r"refusing to publish checkpoint .*cycle 2.*token 1"):
            store.save(Checkpoint(topic="ev", cycle=2), fence=lock)
        assert store.load().cycle == 1
    finally:
        lock.release()
    assert LocalLeaseStore(lock.path).read()[1]["holder"] == "taker"


# --------------------------------------------------------------------------- pending parts


def test_part_and_dead_letter_names_depend_only_on_window_and_range():
    rng = OffsetRange("ev", 2, 100, 200)
    path = part_path("/r", "kafka-ev", "20261127T0100Z", rng)
    assert path == "/r/pending/kafka-ev/20261127T0100Z/ev-p00002-00000000000000000100-00000000000000000200.jsonl.gz"
    assert part_path("/r", "kafka-ev", "20261127T0100Z", rng, late_side_output=True).startswith("/r/late/kafka-ev/")
    info = parse_part_path(path)
    assert info.window_id == "20261127T0100Z" and info.range == rng
    assert deadletter_path("/r", "kafka-ev", "20261127", rng).endswith(
        "/deadletter/20261127/stream-kafka-ev-p00002-00000000000000000100-00000000000000000200.jsonl")


def test_part_encoding_is_byte_stable_and_round_trips():
    events = [Event("b", 5, {"x": 1.5, "s": "é", "l": [1, 2]}, "kafka://ev/0", "7", 9),
              Event("a", 6, {"x": 2}, "kafka://ev/0", "3", None)]
    data = encode_part(events)
    assert data == encode_part(list(reversed(events)))
    assert decode_part(data) == sorted(events)


def test_range_index_finds_the_planned_range():
    ranges = [OffsetRange("t", 0, 0, 10), OffsetRange("t", 0, 10, 20), OffsetRange("t", 1, 5, 6)]
    index = RangeIndex(ranges)
    assert index.find(0, 10) == ranges[1] and index.find(0, 9) == ranges[0] and index.find(1, 5) == ranges[2]
    for partition, offset in ((0, 20), (1, 4), (2, 0)):
        with pytest.raises(ValueError, match="no planned range"):
            index.find(partition, offset)


def test_a_stream_on_a_root_whose_lease_is_held_exits_with_lock_error_naming_the_holder(tmp_path):
    from pipeline.config import config_from_dict
    from pipeline.stream import run_stream

    config = config_from_dict({"storage": {"root": str(tmp_path)},
                               "source": {"kafka": {"bootstrap_servers": "127.0.0.1:1", "topic": "ev"}}})
    with StorageLock(str(tmp_path), command="backfill"):
        with pytest.raises(LockError, match=f"held by pid {os.getpid()} .*command backfill") as caught:
            run_stream(config, options=None, cycles=1)
    assert caught.value.exit_code == 5


def test_stream_without_a_kafka_section_is_a_config_error(tmp_path):
    from pipeline.config import config_from_dict
    from pipeline.stream import run_stream

    with pytest.raises(ConfigError, match="source.kafka"):
        run_stream(config_from_dict({"storage": {"root": str(tmp_path)}}), options=None)


def test_schema_sample_takes_the_first_records_of_every_partition():
    from pipeline.stream import schema_sample

    ranges = [OffsetRange("t", 0, 0, 10), OffsetRange("t", 0, 10, 20), OffsetRange("t", 1, 5, 8)]
    assert schema_sample(ranges, limit=30) == [OffsetRange("t", 0, 0, 10), OffsetRange("t", 0, 10, 15),
                                               OffsetRange("t", 1, 5, 8)]
