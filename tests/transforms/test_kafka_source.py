"""Tests of transforms.kafka (source, client settings, producing).

Unit tests cover the pure parts (range planning, config translation). Integration tests run
against a real Apache Kafka broker started by the fixtures in tests/services.py; nothing about the
broker is mocked. Security, compression and transactions: tests/test_kafka_security.py and
tests/test_kafka_formats.py.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from core.errors import ConfigError
from transforms.kafka.client import client_kwargs
from transforms.kafka.produce import ensure_topic, produce
from transforms.kafka.source import (
    KafkaRecord,
    KafkaSourceError,
    OffsetRange,
    ReadKafkaRanges,
    _ReadRangeDoFn,
    beginning_offsets,
    commit_group_offsets,
    end_offsets,
    kwargs_for,
    plan_ranges,
)


def read_range(client_kwargs, rng, timeout_s=15.0):
    """The records of ``rng`` as ReadKafkaRanges' DoFn reads them (its own setup/teardown)."""
    fn = _ReadRangeDoFn(client_kwargs, timeout_s)
    fn.setup()
    try:
        yield from fn.process(rng)
    finally:
        fn.teardown()


N_MESSAGES = 600
PARTITIONS = 3


# ---------------------------------------------------------------------------------------------
# plan_ranges


def test_plan_ranges_splits_each_partition_into_bounded_chunks():
    ranges = plan_ranges({0: 0, 1: 10, 2: 5}, {0: 7, 1: 10, 2: 6}, "t", 3)
    assert ranges == [
        OffsetRange("t", 0, 0, 3), OffsetRange("t", 0, 3, 6), OffsetRange("t", 0, 6, 7),
        OffsetRange("t", 2, 5, 6),
    ]


def test_plan_ranges_covers_every_offset_exactly_once():
    start, end = {0: 3, 1: 0}, {0: 1003, 1: 999}
    ranges = plan_ranges(start, end, "t", 97)
    covered = [(r.partition, o) for r in ranges for o in range(r.start, r.end)]
    expected = [(p, o) for p in (0, 1) for o in range(start[p], end[p])]
    assert covered == expected
    assert max(len(r) for r in ranges) == 97


@pytest.mark.parametrize("start,end,split,match", [
    ({0: 0}, {0: 5}, 0, "max_records_per_split"),
    ({0: 0}, {0: 5, 1: 5}, 10, "every partition"),
    ({0: 6}, {0: 5}, 10, "recreated"),
    ({0: -1}, {0: 5}, 10, "not in"),
])
def test_plan_ranges_rejects_bad_input(start, end, split, match):
    with pytest.raises(ValueError, match=match):
        plan_ranges(start, end, "t", split)


# ---------------------------------------------------------------------------------------------
# client_kwargs


@dataclass(frozen=True)
class KafkaCfg:
    bootstrap_servers: str = "b0:9092, b1:9093"
    topic: str = "events"
    group_id: str = "ctpipe"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username_env: str | None = None
    sasl_password_env: str | None = None
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_check_hostname: bool = True
    max_message_bytes: int = 2 * 1024 * 1024


def _sasl_cfg(**kw) -> KafkaCfg:
    base = dict(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                sasl_username_env="T_KAFKA_USER")
    return KafkaCfg(**{**base, **kw})


def test_client_kwargs_plaintext():
    kw = client_kwargs(KafkaCfg())
    assert kw["bootstrap_servers"] == ["b0:9092", "b1:9093"]
    assert kw["security_protocol"] == "PLAINTEXT"
    assert kw["max_partition_fetch_bytes"] == 2 * 1024 * 1024
    assert kw["max_request_size"] == 2 * 1024 * 1024
    assert not any(k.startswith(("sasl_", "ssl_")) for k in kw)


def test_client_kwargs_sasl_ssl_scram_secret_from_env(monkeypatch, tmp_path):
    cafile = tmp_path / "ca.pem"
    cafile.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("T_KAFKA_USER", "svc-ctpipe")
    monkeypatch.setenv("T_KAFKA_PASS", "s3cr3t-env")
    kw = client_kwargs(_sasl_cfg(sasl_password_env="T_KAFKA_PASS", ssl_cafile=str(cafile),
                                 ssl_check_hostname=False))
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "svc-ctpipe"
    assert kw["sasl_plain_password"] == "s3cr3t-env"
    assert kw["ssl_cafile"] == str(cafile)
    assert kw["ssl_check_hostname"] is False


def test_client_kwargs_secret_from_file(monkeypatch, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cr3t-file\n")
    monkeypatch.setenv("T_KAFKA_USER", "svc-ctpipe")
    kw = client_kwargs(_sasl_cfg(sasl_password_file=str(secret)))
    assert kw["sasl_plain_password"] == "s3cr3t-file"
    assert kw["ssl_check_hostname"] is True


def test_client_kwargs_missing_env_secret_names_the_variable(monkeypatch):
    monkeypatch.setenv("T_KAFKA_USER", "svc-ctpipe")
    monkeypatch.delenv("T_KAFKA_PASS_MISSING", raising=False)
    with pytest.raises(ConfigError, match="T_KAFKA_PASS_MISSING.*not set.*export"):
        client_kwargs(_sasl_cfg(sasl_password_env="T_KAFKA_PASS_MISSING"))


def test_client_kwargs_missing_secret_file_names_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv("T_KAFKA_USER", "svc-ctpipe")
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=str(missing)):
        client_kwargs(_sasl_cfg(sasl_password_file=str(missing)))


@pytest.mark.parametrize("cfg,match", [
    (_sasl_cfg(), "sasl_password_env.*sasl_password_file"),
    (_sasl_cfg(sasl_mechanism="GSSAPI", sasl_password_env="X"), "sasl_mechanism"),
    (KafkaCfg(security_protocol="TLS"), "security_protocol"),
    (KafkaCfg(sasl_mechanism="PLAIN"), "SASL_SSL or SASL_PLAINTEXT"),
    (KafkaCfg(bootstrap_servers=" , "), "bootstrap_servers is empty"),
    (KafkaCfg(bootstrap_servers="b0"), "host:port"),
    (KafkaCfg(security_protocol="SSL", ssl_cafile="/nonexistent/ca.pem"), "ssl_cafile"),
])
def test_client_kwargs_rejects_bad_config(monkeypatch, cfg, match):
    monkeypatch.setenv("T_KAFKA_USER", "svc-ctpipe")
    with pytest.raises(ConfigError, match=match):
        client_kwargs(cfg)


def test_client_kwargs_repr_masks_password(monkeypatch):
    monkeypatch.setenv("T_KAFKA_USER", "svc-ctpipe")
    monkeypatch.setenv("T_KAFKA_PASS", "hunter2-secret")
    kw = client_kwargs(_sasl_cfg(sasl_password_env="T_KAFKA_PASS"))
    for text in (repr(kw), str(kw), f"{kw}", "%s" % (kw,)):
        assert "hunter2-secret" not in text
        assert "svc-ctpipe" in text and "***" in text


def _pardo_payloads(pipeline) -> bytes:
    """The pipeline proto with every DoFn payload decoded (Beam stores them compressed)."""
    import base64
    import bz2
    import zlib

    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    proto = pipeline.to_runner_api()
    out = [proto.SerializeToString()]
    for transform in proto.components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn.payload
            data = base64.b64decode(payload)
            out.append(bz2.decompress(data) if data[:3] == b"BZh" else zlib.decompress(data))
    return b"".join(out)


def test_secrets_are_not_pickled_and_are_read_again_where_the_client_is_made(monkeypatch, tmp_path):
    """The kwargs travel inside Beam DoFns (the pipeline proto sent to a runner): a pickle holds
    where each secret comes from, never its value; the worker reads it in kwargs_for."""
    import pickle

    import apache_beam as beam

    from transforms.kafka.source import OffsetRange, ReadKafkaRanges

    monkeypatch.setenv("T_KAFKA_USER", "svc-ctpipe")
    secret = tmp_path / "password"
    secret.write_text("hunter2-secret\n")
    kw = client_kwargs(_sasl_cfg(sasl_password_file=str(secret)))
    assert kw["sasl_plain_password"] == "hunter2-secret"
    blob = pickle.dumps(kw)
    assert b"hunter2-secret" not in blob and b"svc-ctpipe" not in blob
    pipeline = beam.Pipeline()
    _ = (pipeline | beam.Create([OffsetRange("t", 0, 0, 1)]) | ReadKafkaRanges(kw))
    proto = _pardo_payloads(pipeline)
    assert b"hunter2-secret" not in proto and str(secret).encode() in proto
    # on a "worker": the unpickled mapping has no secret until a client is made from it
    clone = pickle.loads(blob)
    assert "sasl_plain_password" not in clone
    assert kwargs_for(KafkaConsumer, clone)["sasl_plain_password"] == "hunter2-secret"
    # the secret is missing where the client is made: the error names the file setting
    secret.unlink()
    with pytest.raises(ConfigError, match="sasl_password_file"):
        kwargs_for(KafkaConsumer, pickle.loads(blob))


# ---------------------------------------------------------------------------------------------
# Against a real broker


def _messages(n: int) -> list[tuple[bytes, bytes]]:
    return [(f"device-{i % 11}".encode(), f"event-{i}".encode()) for i in range(n)]


@pytest.fixture
def filled_topic(kafka_broker, kafka_topic):
    """A 3-partition topic holding N_MESSAGES messages; returns (client kwargs, topic, end)."""
    kw = kafka_broker.client_kwargs
    assert produce(kw, kafka_topic, _messages(N_MESSAGES), partitions=PARTITIONS) == N_MESSAGES
    end = end_offsets(kw, kafka_topic)
    return kw, kafka_topic, end


def test_end_offsets_count_every_message(filled_topic):
    kw, topic, end = filled_topic
    assert sorted(end) == list(range(PARTITIONS))
    assert sum(end.values()) == N_MESSAGES
    assert beginning_offsets(kw, topic) == {p: 0 for p in range(PARTITIONS)}


def test_read_range_reads_all_messages_exactly_once(filled_topic):
    kw, topic, end = filled_topic
    ranges = plan_ranges(beginning_offsets(kw, topic), end, topic, 70)
    records = [rec for rng in ranges for rec in read_range(kw, rng)]
    positions = [(r.partition, r.offset) for r in records]
    assert len(positions) == len(set(positions)) == N_MESSAGES
    assert set(positions) == {(p, o) for p, e in end.items() for o in range(e)}
    assert sorted(r.value for r in records) == sorted(v for _, v in _messages(N_MESSAGES))
    # Keys route: one device's events all land in one partition.
    partitions_of_key: dict[bytes, set[int]] = {}
    for r in records:
        partitions_of_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(ps) == 1 for ps in partitions_of_key.values())
    assert all(r.topic == topic and r.timestamp_ms > 0 for r in records)


def test_read_sub_range_returns_exactly_those_offsets(filled_topic):
    kw, topic, end = filled_topic
    partition = max(end, key=end.get)
    lo, hi = end[partition] // 3, end[partition] // 3 + 17
    got = [(r.partition, r.offset) for r in read_range(kw, OffsetRange(topic, partition, lo, hi))]
    assert got == [(partition, o) for o in range(lo, hi)]
    assert list(read_range(kw, OffsetRange(topic, partition, lo, lo))) == []


def test_read_range_past_the_end_fails_instead_of_hanging(filled_topic):
    kw, topic, end = filled_topic
    rng = OffsetRange(topic, 0, end[0] - 2, end[0] + 5)
    got = []
    with pytest.raises(KafkaSourceError, match="no progress"):
        for rec in read_range(kw, rng, timeout_s=1.0):
            got.append(rec.offset)
    assert got == [end[0] - 2, end[0] - 1]


def test_read_kafka_ranges_in_beam(filled_topic):
    kw, topic, end = filled_topic
    ranges = plan_ranges({p: 0 for p in end}, end, topic, 50)
    expected = [(p, o) for p, e in end.items() for o in range(e)]
    with BeamTestPipeline() as p:
        records = p | beam.Create(ranges) | ReadKafkaRanges(kw)
        assert_that(records | beam.Map(lambda r: (r.partition, r.offset)), equal_to(expected))
        assert_that(records | "Types" >> beam.Map(lambda r: type(r).__name__) | beam.Distinct(),
                    equal_to([KafkaRecord.__name__]), label="AllKafkaRecords")


def test_commit_group_offsets_visible_to_kafka_tooling(filled_topic):
    kw, topic, end = filled_topic
    group = f"ctpipe-{uuid.uuid4().hex[:8]}"
    committed = {p: e // 2 for p, e in end.items()}
    commit_group_offsets(kw, group, topic, committed)

    admin = KafkaAdminClient(**kw)
    try:
        listed = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert {tp.partition: om.offset for tp, om in listed.items() if tp.topic == topic} == committed

    consumer = KafkaConsumer(group_id=group, enable_auto_commit=False, **kw)
    try:
        assert {p: consumer.committed(TopicPartition(topic, p)) for p in end} == committed
    finally:
        consumer.close(autocommit=False)

    # A later commit moves the offsets forward.
    commit_group_offsets(kw, group, topic, end)
    admin = KafkaAdminClient(**kw)
    try:
        listed = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert {tp.partition: om.offset for tp, om in listed.items() if tp.topic == topic} == end


def test_missing_topic_error_names_topic_and_bootstrap(kafka_broker):
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaSourceError, match=f"{topic}.*{kafka_broker.bootstrap}"):
        end_offsets(kafka_broker.client_kwargs, topic, timeout_s=5)


def test_unreachable_broker_error_is_bounded():
    from tests._procs import free_port

    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(KafkaSourceError, match=f"cannot reach Kafka at {bootstrap}"):
        end_offsets({"bootstrap_servers": bootstrap}, "any", timeout_s=1.5)


def test_produce_paces_to_rate(kafka_broker, kafka_topic):
    import time

    ensure_topic(kafka_broker.client_kwargs, kafka_topic, 1)
    t0 = time.monotonic()
    sent = produce(kafka_broker.client_kwargs, kafka_topic, _messages(60), rate=100.0)
    elapsed = time.monotonic() - t0
    assert sent == 60
    # 60 messages at 100/s with a 10-message burst take at least ~0.5 s.
    assert elapsed >= 0.45
    assert sum(end_offsets(kafka_broker.client_kwargs, kafka_topic).values()) == 60


def test_messages_survive_broker_crash_and_restart(kafka_broker_factory, kafka_topic):
    broker = kafka_broker_factory.start()
    kw = broker.client_kwargs
    assert produce(kw, kafka_topic, _messages(300), partitions=PARTITIONS) == 300
    before = end_offsets(kw, kafka_topic)
    assert sum(before.values()) == 300

    broker.kill()
    assert not broker.running
    broker.restart()
    assert broker.client_kwargs == kw  # same port, same log dir

    assert end_offsets(kw, kafka_topic) == before
    ranges = plan_ranges(beginning_offsets(kw, kafka_topic), before, kafka_topic, 1000)
    values = sorted(r.value for rng in ranges for r in read_range(kw, rng))
    assert values == sorted(v for _, v in _messages(300))


def test_a_missing_codec_fails_before_any_read_naming_the_package(tmp_path):
    """Without python-snappy kafka-python spins forever on a snappy batch; ctpipe refuses first."""
    import os
    import subprocess
    import sys

    shim = tmp_path / "shim" / "snappy"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('python-snappy hidden by the test')\n")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = ("from transforms.kafka.source import require_codecs\n"
             "try:\n    require_codecs()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), repo])}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith("KafkaSourceError kafka-python here cannot decompress snappy record batches: "
                                  "install python-snappy"), done.stdout + done.stderr
    from transforms.kafka.source import require_codecs

    require_codecs()  # this environment has all four


def test_kwargs_for_gives_each_client_only_its_keys_and_keeps_the_mask(monkeypatch):
    from kafka import KafkaProducer


    monkeypatch.setenv("T_KAFKA_USER", "svc-ctpipe")
    monkeypatch.setenv("T_KAFKA_PASS", "hunter2-secret")
    kw = client_kwargs(_sasl_cfg(sasl_password_env="T_KAFKA_PASS"))
    admin = kwargs_for(KafkaAdminClient, kw)
    assert "max_partition_fetch_bytes" not in admin and "max_request_size" not in admin
    assert admin["sasl_plain_password"] == "hunter2-secret"
    assert "hunter2-secret" not in repr(admin)
    assert "max_request_size" in kwargs_for(KafkaProducer, kw)
    assert "max_partition_fetch_bytes" in kwargs_for(KafkaConsumer, kw)
    with pytest.raises(ValueError, match="bootstrap_server"):
        kwargs_for(KafkaConsumer, {"bootstrap_server": "typo:9092"})
