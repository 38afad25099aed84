"""``ctpipe stream --until-idle [--seal-at-end]`` against a real Apache Kafka broker while a producer
keeps producing: the run ends once caught up with the end offsets seen at its start, every record
before its checkpoint is in exactly one sealed window, and ``--seal-at-end`` seals the open window
(later records for it make v2 by the late-data rule)."""
from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
from kafka import KafkaProducer

from core import window_store
from pipeline.checkpoint import CheckpointStore, source_id
from pipeline.stream import cap_end_offsets
from tests._stream_check import StreamProcess, audit, sensor_message, write_config
from transforms.kafka.produce import ensure_topic
from transforms.kafka.source import end_offsets

PARTITIONS = 2
START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
OPEN_WINDOW = "20261127T0300Z"
PRODUCER_CAP = 40_000
"""The continuous producer stops by itself after this many messages: a stream that never stops
would outlive it (the test then fails: the run must end while the producer still produces)."""


def test_cap_end_offsets_stops_at_the_recorded_ends_and_skips_new_partitions():
    end = {0: 900, 1: 50, 2: 10}
    assert cap_end_offsets(end, {0: 700, 1: 80}, {0: 100, 1: 20}, {}) == {0: 700, 1: 50, 2: 0}
    # a partition new since the start stays where reading it would begin (checkpoint, else beginning)
    assert cap_end_offsets({0: 5, 3: 40}, {0: 5}, {3: 12}, {3: 30}) == {0: 5, 3: 12}


class _Producer:
    """Sends sensor events to both partitions, recording (partition, offset) -> id from the acks."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.acked: dict = {}
        self.sent = 0
        self.stop = threading.Event()
        self.capped = False
        self._thread = None

    def send(self, ev_id: str, minutes: float, partition: int) -> None:
        key, value = sensor_message(ev_id, START + dt.timedelta(minutes=minutes), 0)
        future = self.producer.send(self.topic, key=key, value=value, partition=partition)
        future.add_callback(lambda md, i=ev_id: self.acked.__setitem__((md.partition, md.offset), i))
        self.sent += 1

    def start_continuous(self) -> None:
        def run():
            k = 0
            while not self.stop.is_set():
                if k >= PRODUCER_CAP:
                    self.capped = True
                    return
                # 3:20 + 20 ms of event time per message: stays inside the 03:00 window
                self.send(f"live-{k:06d}", 200 + k * 0.02 / 60, k % PARTITIONS)
                k += 1
                self.stop.wait(0.005)  # the producer's rate (about 200 messages/s), not a race workaround

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def acked_at_least(self, n: int, timeout_s: float = 120) -> None:
        waiting = threading.Event()
        for _ in range(int(timeout_s / 0.05)):
            if len(self.acked) >= n:
                break
            waiting.wait(0.05)  # polling the ack count, bounded above
        assert len(self.acked) >= n, f"only {len(self.acked)} of {n} messages acknowledged"

    def finish(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.producer.flush(timeout=60)
        self.producer.close()


def _version_ids(root: str, wid: str, version: int) -> list:
    import tensorflow as tf

    window = next(w for w in window_store.list_sealed(root, latest_only=False)
                  if w.window_id == wid and w.version == version)
    ids = []
    for raw in tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP").as_numpy_iterator():
        ids.append(tf.train.Example.FromString(raw).features.feature["id"].bytes_list.value[0].decode())
    return ids


@pytest.mark.slow
def test_until_idle_ends_under_continuous_production_and_seal_at_end_seals_the_open_window(
        kafka_broker, kafka_topic, tmp_path):
    ensure_topic(kafka_broker.client_kwargs, kafka_topic, PARTITIONS)
    producer = _Producer(kafka_broker.bootstrap, kafka_topic)
    # three hours of history (windows 00:00-02:00), then live traffic in the 03:00 window
    for i in range(1200):
        producer.send(f"hist-{i:06d}", i * 180 / 1200, i % PARTITIONS)
    producer.producer.flush(timeout=60)
    producer.start_continuous()
    producer.acked_at_least(1200 + 200)
    root = str(tmp_path / "store")
    config = write_config(str(tmp_path / "ctpipe.yaml"), root, kafka_broker.bootstrap, kafka_topic, split=500)
    before = end_offsets(kafka_broker.client_kwargs, kafka_topic)
    stream = StreamProcess(config, "--seal-at-end")
    try:
        rc = stream.wait()
        still_producing = not producer.capped and not producer.stop.is_set()
    finally:
        producer.finish()
    assert rc == 0, stream.stderr[-3000:]
    assert still_producing, "the producer stopped before the stream did: --until-idle waited for traffic to end"
    assert any('"seal_at_end"' in line for line in stream.lines), stream.lines[-3:]

    checkpoint = CheckpointStore(root, kafka_topic).load()
    assert checkpoint.in_flight is None
    assert all(checkpoint.offsets[p] >= before[p] for p in before), (checkpoint.offsets, before)
    after = end_offsets(kafka_broker.client_kwargs, kafka_topic)
    assert any(after[p] > checkpoint.offsets[p] for p in after), "nothing was produced after the run's end"
    expected = sorted(i for (p, off), i in producer.acked.items() if off < checkpoint.offsets[p])
    result = audit(root, source_id(kafka_topic))
    counts = Counter(result.sealed_ids)
    assert not [i for i, c in counts.items() if c > 1], "ids sealed twice"
    assert sorted(counts) == expected
    assert result.manifest_records == len(expected)
    assert result.pending_ids == []  # the open window was sealed at the end
    sealed = {w.window_id: w.version for w in window_store.list_sealed(root)}
    assert sealed == {"20261127T0000Z": 1, "20261127T0100Z": 1, "20261127T0200Z": 1, OPEN_WINDOW: 1}
    first = _version_ids(root, OPEN_WINDOW, 1)
    assert first and all(i.startswith("live-") for i in first)

    # The rest of the live records are late for the sealed 03:00 window: they reseal it as v2.
    second = StreamProcess(config)
    assert second.wait() == 0, second.stderr[-3000:]
    newest = {w.window_id: w.version for w in window_store.list_sealed(root)}
    assert newest[OPEN_WINDOW] == 2
    v2 = _version_ids(root, OPEN_WINDOW, 2)
    assert set(first) < set(v2) and len(v2) == len(set(v2))
    result = audit(root, source_id(kafka_topic))
    assert sorted(result.sealed_ids) == sorted(producer.acked.values())
