"""Batches another client wrote: compressed (gzip, snappy, lz4, zstd) and transactional.

Every topic here is produced by Apache Kafka's own Java client (tests/java/CtpipeTestProducer.java,
compiled against the pinned classpath) into the real broker of tests/services.py, and read back
through ctpipe's range reader (transforms.kafka.source: ``_ReadRangeDoFn`` / ``ReadKafkaRanges``),
the path ``ctpipe stream`` reads with. The broker's log files are inspected directly to prove the
batches really are compressed / transactional, so a test cannot pass on plain batches.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import time

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from kafka.record import MemoryRecords

from transforms.kafka.produce import ensure_topic
from transforms.kafka.source import (
    OffsetRange,
    ReadKafkaRanges,
    _ReadRangeDoFn,
    beginning_offsets,
    end_offsets,
    plan_ranges,
)

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # codec -> batch attribute bits


def log_batches(broker, topic: str, partition: int = 0) -> list:
    """The record batches in the broker's log files of ``topic``-``partition`` (read from disk)."""
    batches = []
    for path in sorted(glob.glob(os.path.join(broker.data_dir, f"{topic}-{partition}", "*.log"))):
        with open(path, "rb") as fh:
            records = MemoryRecords(fh.read())
        while (batch := records.next_batch()) is not None:
            batches.append(batch)
    return batches


class RangeReader:
    """Reads OffsetRanges with one ``_ReadRangeDoFn`` (one consumer), as a Beam worker would."""

    def __init__(self, client_kwargs: dict, timeout_s: float = 15.0):
        self.fn = _ReadRangeDoFn(client_kwargs, timeout_s)

    def __enter__(self):
        self.fn.setup()
        return self

    def __exit__(self, *exc):
        self.fn.teardown()

    def read(self, rng: OffsetRange) -> list:
        return list(self.fn.process(rng))


# ---------------------------------------------------------------------------------------------
# Compression


def test_batches_compressed_by_the_java_client_with_every_codec_are_read(kafka_broker, kafka_topic, java_producer):
    """One partition holding batches of all four codecs (four producers, as a shared topic would):
    every value comes back, in offset order, through ReadKafkaRanges in Beam and the DoFn alone."""
    kw = kafka_broker.client_kwargs
    ensure_topic(kw, kafka_topic, 1)
    expected = []
    for codec in CODECS:
        producer = java_producer(kafka_broker.bootstrap, kafka_topic, compression=codec)
        values = [json.dumps({"id": f"{codec}-{i}", "codec": codec, "note": "sensor reading " * (i % 9)})
                  for i in range(300)]
        for i, value in enumerate(values):
            producer.plain(f"dev-{i % 7}", value)
        assert producer.sync() == len(values)
        producer.close()
        expected += values

    seen = {batch.compression_type for batch in log_batches(kafka_broker, kafka_topic)}
    assert seen == set(CODECS.values()), f"codecs in the log: {seen}"

    end = end_offsets(kw, kafka_topic)
    assert end == {0: len(expected)}
    ranges = plan_ranges(beginning_offsets(kw, kafka_topic), end, kafka_topic, 250)
    with RangeReader(kw) as reader:
        records = [r for rng in ranges for r in reader.read(rng)]
    assert [r.offset for r in records] == list(range(len(expected)))
    assert [r.value.decode() for r in records] == expected
    assert {r.key for r in records} == {f"dev-{i}".encode() for i in range(7)}

    with BeamTestPipeline() as p:
        read = p | beam.Create(ranges) | ReadKafkaRanges(kw)
        assert_that(read | beam.Map(lambda r: r.value.decode()), equal_to(expected))


# ---------------------------------------------------------------------------------------------
# Transactions (read_committed)


def _with(kw: dict, isolation_level: str) -> dict:
    return {**kw, "isolation_level": isolation_level}


def test_read_committed_skips_aborted_records_and_transaction_markers(kafka_broker, kafka_topic, java_producer):
    kw = kafka_broker.client_kwargs
    ensure_topic(kw, kafka_topic, 1)
    producer = java_producer(kafka_broker.bootstrap, kafka_topic, transactional_id=f"txn-{kafka_topic}")
    committed, aborted = [], []

    def plain(name):
        producer.plain("k", name)
        committed.append(name)

    def transaction(prefix, n, outcome):
        producer.begin()
        names = [f"{prefix}-{i}" for i in range(n)]
        for name in names:
            producer.send("k", name)
        (producer.commit if outcome == "commit" else producer.abort)()
        (committed if outcome == "commit" else aborted).extend(names)

    for i in range(3):
        plain(f"p-{i}")
    producer.sync()
    transaction("c1", 5, "commit")
    transaction("a1", 5, "abort")
    plain("p-3")
    plain("p-4")
    producer.sync()
    transaction("c2", 3, "commit")
    transaction("a2", 2, "abort")
    plain("p-5")
    producer.close()

    batches = log_batches(kafka_broker, kafka_topic)
    markers = [b for b in batches if b.is_control_batch]
    assert len(markers) == 4 and all(b.is_transactional for b in markers)
    end = end_offsets(_with(kw, "read_committed"), kafka_topic)
    # No transaction is open: the last stable offset is the high watermark, markers included.
    assert end == end_offsets(_with(kw, "read_uncommitted"), kafka_topic) == {0: len(committed) + len(aborted) + 4}

    with RangeReader(_with(kw, "read_committed"), timeout_s=5.0) as reader:
        whole = reader.read(OffsetRange(kafka_topic, 0, 0, end[0]))
        # One offset per range: a range holding only a marker or an aborted record must end at
        # once (the reader advances by position, not by records returned) and yield nothing.
        started = time.monotonic()
        singles = [r for rng in plan_ranges({0: 0}, end, kafka_topic, 1) for r in reader.read(rng)]
        assert time.monotonic() - started < 60
    assert [r.value.decode() for r in whole] == committed
    assert [(r.offset, r.value) for r in singles] == [(r.offset, r.value) for r in whole]

    with RangeReader(_with(kw, "read_uncommitted")) as reader:
        everything = [r.value.decode() for r in reader.read(OffsetRange(kafka_topic, 0, 0, end[0]))]
    assert sorted(everything) == sorted(committed + aborted)  # the setting reaches the consumer


def test_end_offsets_stop_at_an_open_transaction_and_move_on_when_it_commits(kafka_broker, kafka_topic,
                                                                          java_producer):
    kw = kafka_broker.client_kwargs
    ensure_topic(kw, kafka_topic, 1)
    producer = java_producer(kafka_broker.bootstrap, kafka_topic, transactional_id=f"txn-{kafka_topic}")
    for i in range(3):
        producer.plain("k", f"p-{i}")
    producer.sync()
    producer.begin()
    for i in range(4):
        producer.send("k", f"open-{i}")
    producer.sync()  # the open transaction's records are in the log (offsets 3-6), uncommitted
    producer.plain("k", "p-after")  # offset 7: committed, but behind the open transaction
    producer.sync()

    assert end_offsets(_with(kw, "read_committed"), kafka_topic) == {0: 3}  # the last stable offset
    assert end_offsets(_with(kw, "read_uncommitted"), kafka_topic) == {0: 8}
    with RangeReader(_with(kw, "read_committed"), timeout_s=5.0) as reader:
        assert [r.value for r in reader.read(OffsetRange(kafka_topic, 0, 0, 3))] == [b"p-0", b"p-1", b"p-2"]

    producer.commit()
    producer.sync()
    deadline = time.monotonic() + 30
    while (end := end_offsets(_with(kw, "read_committed"), kafka_topic)) == {0: 3}:
        assert time.monotonic() < deadline, "the last stable offset did not move after the commit"
        time.sleep(0.1)
    assert end == {0: 9}  # 8 records + the commit marker
    producer.close()
    with RangeReader(_with(kw, "read_committed")) as reader:
        values = [r.value.decode() for r in reader.read(OffsetRange(kafka_topic, 0, 3, 9))]
    assert values == [f"open-{i}" for i in range(4)] + ["p-after"]


def test_aborted_transactions_never_enter_a_window_and_a_cycle_never_waits_for_an_open_one(
        kafka_broker, kafka_topic, java_producer, tmp_path):
    """``ctpipe stream`` (in process, read_committed by default): a cycle with a transaction open
    reads up to the last stable offset and completes; the next cycle, after the commit, reads the
    rest; the aborted events are in no sealed window and in no checkpointed offset's records."""
    from pipeline import stream
    from pipeline.checkpoint import CheckpointStore
    from pipeline.config import load_config
    from pipeline.options import pipeline_options
    from tests._stream_check import sealed_ids, write_config

    ensure_topic(kafka_broker.client_kwargs, kafka_topic, 1)
    start = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)

    def event(ev_id: str, minutes: int) -> str:
        ts = (start + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
        return json.dumps({"id": ev_id, "ts": ts, "device_id": "dev-001", "firmware": "v1",
                           "temperature": 50.0 + minutes % 7, "vibration": 1.0, "humidity": 40.0,
                           "label": minutes % 2})

    producer = java_producer(kafka_broker.bootstrap, kafka_topic, transactional_id=f"txn-{kafka_topic}")
    producer.begin()
    for m in range(0, 20):
        producer.send("dev-001", event(f"c-{m}", m))
    producer.commit()
    producer.begin()
    for m in range(20, 40):
        producer.send("dev-001", event(f"a-{m}", m))
    producer.abort()
    producer.begin()  # stays open during the first cycle
    for m in range(40, 60):
        producer.send("dev-001", event(f"o-{m}", m))
    producer.sync()

    root = str(tmp_path / "store")
    config = load_config(write_config(str(tmp_path / "c.yaml"), root, kafka_broker.bootstrap, kafka_topic))
    options = pipeline_options("runner_configs/direct.yaml")
    lso = end_offsets(kafka_broker.client_kwargs, kafka_topic)
    assert lso == {0: 20 + 1 + 20 + 1}  # committed + marker + aborted + marker: the open one starts here
    first = stream.run_stream(config, options, cycles=1)
    assert first[0].records == 42 and CheckpointStore(root, kafka_topic).load().offsets == lso

    producer.commit()
    producer.plain("dev-001", event("wm", 180))  # moves the watermark past the 00:00 window
    producer.close()
    stream.run_stream(config, options, until_idle=True)
    ids, _records, _windows = sealed_ids(root)
    assert sorted(ids) == sorted([f"c-{m}" for m in range(20)] + [f"o-{m}" for m in range(40, 60)])
    assert not [i for i in ids if i.startswith("a-")]
