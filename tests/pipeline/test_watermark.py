"""The stream watermark cannot be poisoned or held forever: pure rules, and a StreamRunner whose
Kafka and Beam steps are replaced by a scripted topic (no broker, no pipeline)."""
from __future__ import annotations

import json

import pytest
from tensorflow_metadata.proto.v0 import schema_pb2

from core import schema_store
from pipeline import stream
from pipeline.checkpoint import Checkpoint
from pipeline.config import config_from_dict
from pipeline.stream import CyclePlan, StreamRunner, compute_watermark, plan_cycle
from transforms.kafka.source import KafkaRecord, to_source_record

H = 3_600_000
M = 60_000
LATENESS_MS = 15 * M


def test_a_partition_that_no_longer_exists_does_not_hold_the_watermark():
    newest = {0: 2 * H, 1: 9 * H, 5: 1 * H}  # partition 5 vanished with a recreated topic
    assert compute_watermark(newest, 900, None, partitions=frozenset({0, 1})) == 2 * H - LATENESS_MS
    assert compute_watermark(newest, 900, None) == 1 * H - LATENESS_MS
    assert compute_watermark({5: 1 * H}, 900, 42, partitions=frozenset({0})) == 42


def test_the_plan_keeps_its_planning_time_and_older_plans_still_load():
    plan = plan_cycle(Checkpoint(topic="t"), {0: 0}, {0: 3}, "t", 10, 10, "20261127", planned_at_ms=1_795_741_200_000)
    assert CyclePlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    older = plan.to_json()
    del older["planned_at_ms"]
    assert CyclePlan.from_json(older).planned_at_ms is None


def test_a_kafka_record_without_a_timestamp_has_no_ingest_time():
    record = KafkaRecord("t", 0, 7, None, b"{}", -1)
    assert to_source_record(record).ingest_time_ms is None
    assert to_source_record(KafkaRecord("t", 0, 7, None, b"{}", 5)).ingest_time_ms == 5


class ScriptedTopic:
    """Per cycle, which partitions deliver records and the newest event time among them."""

    def __init__(self, cycles: list[dict], clock_step_s: float):
        self.cycles = cycles
        self.index = -1
        self.offsets: dict = {}
        self.now = 1_800_000_000.0
        self.step = clock_step_s
        self.partitions = None

    def end_offsets(self, _kwargs, _topic):
        self.index += 1
        self.now += self.step
        for partition in self.cycles[self.index]:
            self.offsets[partition] = self.offsets.get(partition, 0) + 1
        present = self.partitions if self.partitions is not None else sorted(self.offsets)
        return {p: self.offsets.get(p, 0) for p in present}

    def run_ingest(self, config, plan, sid, kwargs, options, schema, collected_before_ms=None):
        delivered = {r.partition for r in plan.ranges}
        return {"parts": [], "dead": 0, "counters": {},
                "newest": {p: t for p, t in self.cycles[self.index].items() if p in delivered}}


@pytest.fixture
def runner_for(tmp_path, monkeypatch):
    def build(topic: ScriptedTopic, idle_timeout=None):
        kafka = {"bootstrap_servers": "localhost:1", "topic": "ev"}
        if idle_timeout:
            kafka["idle_partition_timeout"] = idle_timeout
        config = config_from_dict({"storage": {"root": str(tmp_path / "store")}, "source": {"kafka": kafka}})
        schema_store.save(config.storage.root, schema_pb2.Schema())
        monkeypatch.setattr(stream, "end_offsets", topic.end_offsets)
        monkeypatch.setattr(stream, "beginning_offsets", lambda _k, _t: {p: 0 for p in range(8)})
        monkeypatch.setattr(stream, "topic_id", lambda _k, _t: "0f5c7a3e-topic")
        monkeypatch.setattr(stream, "run_ingest", topic.run_ingest)
        monkeypatch.setattr(stream, "run_seal", lambda *a, **k: [])
        monkeypatch.setattr(stream, "commit_group_offsets", lambda *a, **k: None)
        return StreamRunner(config, options=None, clock=lambda: topic.now)

    return build


def _once_then_silent(cycles: int) -> list:
    """Partition 0 delivers once (at 1h); partition 1 delivers every cycle, 10 minutes further each time."""
    return [{0: 1 * H, 1: 1 * H}] + [{1: 1 * H + k * 10 * M} for k in range(1, cycles)]


def test_a_partition_that_received_data_once_then_nothing_stops_holding_the_watermark(runner_for):
    topic = ScriptedTopic(_once_then_silent(6), clock_step_s=600)  # a cycle every 10 minutes
    runner = runner_for(topic, idle_timeout="30m")
    marks = [runner.run_cycle().watermark_ms for _ in range(6)]
    held = 1 * H - LATENESS_MS
    # silent for 10, 20, 30 minutes: still holds; from 40 minutes on, partition 1 alone decides
    assert marks[:4] == [held] * 4
    assert marks[4:] == [1 * H + 40 * M - LATENESS_MS, 1 * H + 50 * M - LATENESS_MS]


def test_without_the_timeout_a_silent_partition_holds_the_watermark(runner_for):
    topic = ScriptedTopic(_once_then_silent(6), clock_step_s=600)
    runner = runner_for(topic)
    assert {runner.run_cycle().watermark_ms for _ in range(6)} == {1 * H - LATENESS_MS}


def test_a_vanished_partition_stops_holding_the_watermark_at_once(runner_for):
    topic = ScriptedTopic(_once_then_silent(3), clock_step_s=60)
    runner = runner_for(topic)
    assert runner.run_cycle().watermark_ms == 1 * H - LATENESS_MS
    topic.partitions = [1]  # the topic was recreated with partition 1 only... as far as offsets go
    assert runner.run_cycle().watermark_ms == 1 * H + 10 * M - LATENESS_MS


class FakeKafkaRead:
    """Stands in for ReadKafkaRanges: offset ranges -> the scripted KafkaRecords (same PTransform shape)."""

    def __init__(self, records: dict):
        self.records = records

    def __call__(self, _kwargs):
        import apache_beam as beam

        records = self.records
        return beam.FlatMap(lambda rng: [records[(rng.partition, o)] for o in range(rng.start, rng.end)])


def test_one_record_stamped_2100_does_not_move_the_watermark(tmp_path, monkeypatch):
    """The real ingest graph (decode, checks, part files) on scripted Kafka records: a record whose
    event time is decades past its Kafka timestamp is a dead letter and the watermark stays with
    the data."""
    import os

    from pipeline.options import pipeline_options
    REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    produced_at = 1_795_748_400_000  # 2026-11-27T03:00Z: when the records reached Kafka
    values = [json.dumps({"id": f"e{i}", "ts": 1_795_737_600 + i * 60, "x": float(i)}).encode() for i in range(120)]
    values.insert(50, json.dumps({"id": "poison", "ts": "2100-01-01T00:00:00Z", "x": 1.0}).encode())
    records = {(0, o): KafkaRecord("ev", 0, o, None, v, produced_at) for o, v in enumerate(values)}
    monkeypatch.setattr(stream, "ReadKafkaRanges", FakeKafkaRead(records))
    monkeypatch.setattr(stream, "end_offsets", lambda _k, _t: {0: len(values)})
    monkeypatch.setattr(stream, "beginning_offsets", lambda _k, _t: {0: 0})
    monkeypatch.setattr(stream, "topic_id", lambda _k, _t: "0f5c7a3e-topic")
    monkeypatch.setattr(stream, "run_seal", lambda *a, **k: [])
    monkeypatch.setattr(stream, "commit_group_offsets", lambda *a, **k: None)
    config = config_from_dict({"storage": {"root": str(tmp_path / "store")},
                               "source": {"kafka": {"bootstrap_servers": "localhost:1", "topic": "ev"}}})
    options = pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml"))
    runner = StreamRunner(config, options, clock=lambda: produced_at / 1000 + 60)
    result = runner.run_cycle()
    newest_valid = (1_795_737_600 + 119 * 60) * 1000
    assert result.dead_letters == 1 and result.watermark_ms == newest_valid - LATENESS_MS
    assert runner.store.load().max_event_time_ms == {0: newest_valid}
    [dead_file] = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "store" / "deadletter") for f in fs]
    [dead] = [json.loads(line) for line in open(dead_file)]
    assert (dead["reason"], dead["position"], dead["source"]) == ("event_time_in_future", "50", "kafka://ev/0")
