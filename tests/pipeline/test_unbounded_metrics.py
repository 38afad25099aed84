"""The series `ctpipe stream --unbounded` exports while attached (pipeline/unbounded_metrics.py),
against the real local Kafka broker (SASL_SSL, as the job reads) and a storage root whose windows
the real backfill sealed. Every expected value is computed independently: lag and records with
kafka-python on the PLAINTEXT listener, windows and dead letters by reading the files."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from core import storage
from core.records import DeadLetter
from pipeline import metrics
from pipeline.checkpoint import source_id
from pipeline.config import config_from_dict
from pipeline.unbounded_metrics import Exporter, JobObserver

REPO = Path(__file__).resolve().parents[2]
GROUP = "ctpipe-unbounded-metrics-test"
USER_ENV = "CTPIPE_TEST_UNBOUNDED_METRICS_USER"


def _value(name: str, **labels) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _config(root: Path, kafka: dict, **extra):
    return config_from_dict({"storage": {"root": str(root)}, "source": {"kafka": kafka},
                             "window": {"size": "1h"}, **extra})


def _sasl_kafka(broker, topic: str) -> dict:
    return {"bootstrap_servers": broker.sasl_ssl_bootstrap, "topic": topic, "group_id": GROUP,
            "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username_env": USER_ENV,
            "sasl_password_file": broker.password_file, "ssl_cafile": broker.ca_file}


def _commit(bootstrap: str, topic: str, offsets: dict) -> None:
    """Commit as KafkaIO does when a checkpoint completes: a group member-less commit."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        tps = {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        consumer.assign(list(tps))
        consumer.commit(tps)
    finally:
        consumer.close(autocommit=False)


def _expected_lag(bootstrap: str, topic: str) -> dict:
    """end - committed per partition (beginning where nothing is committed), read directly."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False,
                             isolation_level="read_committed")
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        end, begin = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        out = {}
        for tp in tps:
            committed = consumer.committed(tp)
            out[tp.partition] = end[tp] - (begin[tp] if committed is None else committed)
        return out
    finally:
        consumer.close(autocommit=False)


def _lags(topic: str, partitions) -> dict:
    return {p: _value("ctpipe_kafka_consumer_lag", topic=topic, partition=str(p)) for p in partitions}


def test_lag_and_records_follow_the_groups_committed_offsets(kafka_broker, kafka_topic, tmp_path, monkeypatch):
    monkeypatch.setenv(USER_ENV, kafka_broker.user)
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(kafka_topic, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    for i in range(10):
        producer.send(kafka_topic, value=b"x%d" % i, partition=0).get(timeout=30)
    for i in range(7):
        producer.send(kafka_topic, value=b"y%d" % i, partition=1).get(timeout=30)
    _commit(kafka_broker.bootstrap, kafka_topic, {0: 4})  # an earlier job got this far; p1 never committed

    port = _free_port()
    config = _config(tmp_path / "store", _sasl_kafka(kafka_broker, kafka_topic),
                     metrics={"port": port, "bind": "127.0.0.1"})
    records_before = _value("ctpipe_records_in_total", stage="stream", source="kafka")
    warnings = []
    observer = JobObserver(config, warn=warnings.append)
    exporter = Exporter(config, observer, interval_s=3600)  # polls driven by the test below
    exporter.start()
    try:
        assert _expected_lag(kafka_broker.bootstrap, kafka_topic) == {0: 6, 1: 7}
        assert _lags(kafka_topic, (0, 1)) == {0: 6, 1: 7}
        # The baseline is where the job starts: nothing counted as consumed yet.
        assert _value("ctpipe_records_in_total", stage="stream", source="kafka") == records_before

        # The job's checkpoints complete: KafkaIO commits; more records arrive on p1.
        _commit(kafka_broker.bootstrap, kafka_topic, {0: 10, 1: 5})
        for i in range(3):
            producer.send(kafka_topic, value=b"z%d" % i, partition=1).get(timeout=30)
        observer.poll()
        expected = _expected_lag(kafka_broker.bootstrap, kafka_topic)
        assert expected == {0: 0, 1: 5}
        assert _lags(kafka_topic, (0, 1)) == expected
        assert _value("ctpipe_records_in_total", stage="stream", source="kafka") - records_before == (10 - 4) + (5 - 0)

        _commit(kafka_broker.bootstrap, kafka_topic, {1: 10})
        observer.poll()
        assert _lags(kafka_topic, (0, 1)) == _expected_lag(kafka_broker.bootstrap, kafka_topic) == {0: 0, 1: 0}
        assert _value("ctpipe_records_in_total", stage="stream", source="kafka") - records_before == 6 + 10

        # The same series on the driver's /metrics, as Prometheus scrapes them.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert f'ctpipe_kafka_consumer_lag{{partition="1",topic="{kafka_topic}"}} 0.0' in text
        assert 'ctpipe_records_in_total{source="kafka",stage="stream"}' in text
    finally:
        producer.close()
        exporter.stop()
    assert warnings == []


def test_an_unreachable_broker_is_one_warning_and_the_polls_go_on(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    config = _config(tmp_path / "store", {"bootstrap_servers": f"127.0.0.1:{closed}", "topic": "ev"})
    warnings = []
    observer = JobObserver(config, warn=warnings.append)
    observer.kafka_timeout_s = 1.0
    observer.start()
    observer.poll()
    observer.poll()
    assert len(warnings) == 1, warnings
    assert "cannot read the consumer group's offsets (source.kafka)" in warnings[0]
    assert "the job is unaffected" in warnings[0]


def _manifests(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("windows/*/v*/MANIFEST.json"))]


@pytest.mark.slow  # one backfill (the real writer seals the windows), ~20-40 s
def test_sealed_windows_and_dead_letters_since_the_start(kafka_broker, kafka_topic, make_events, tmp_path):
    events, _stats = make_events(hours=3, rows_per_hour=60)
    sealed = tmp_path / "sealed"
    path = tmp_path / "backfill.json"
    path.write_text(json.dumps({"storage": {"root": str(sealed)}, "source": {"files": {"uri": events}},
                                "window": {"size": "1h"},
                                "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"}}))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "--config", str(path), "--runner-config",
                           str(REPO / "runner_configs" / "direct.yaml")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    windows = _manifests(sealed)
    assert len(windows) >= 3

    # The observed root already holds one sealed window and one dead letter (an earlier job's).
    root = tmp_path / "store"
    first = sorted((sealed / "windows").iterdir())[0]
    storage.copy_tree(str(first), str(root / "windows" / first.name))
    from pipeline.streaming_graph import _write_dead_letter

    topic = kafka_topic
    old = DeadLetter("bad_json", "not JSON", b"{", f"kafka://{topic}/0", "3")
    _write_dead_letter(old, str(root))
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    config = _config(root, {"bootstrap_servers": kafka_broker.bootstrap, "topic": topic, "group_id": GROUP})

    verdicts = metrics.VERDICTS
    before = {v: _value("ctpipe_windows_sealed_total", verdict=v) for v in verdicts}
    dead_before = {r: _value("ctpipe_dead_letters_total", stage="stream", reason=r) for r in ("bad_json", "not_utf8")}
    warnings = []
    observer = JobObserver(config, warn=warnings.append, clock=lambda: 1_800_000_000.0)
    observer.start()
    observer.poll()
    assert {v: _value("ctpipe_windows_sealed_total", verdict=v) for v in verdicts} == before

    # The job seals the other windows (the real writer's manifests appear) and writes dead letters;
    # a replayed dead letter rewrites its own file.
    for window in sorted((sealed / "windows").iterdir())[1:]:
        storage.copy_tree(str(window), str(root / "windows" / window.name))
    for reason, position in (("bad_json", "7"), ("not_utf8", "8"), ("bad_json", "9")):
        _write_dead_letter(DeadLetter(reason, "bad", b"\xff", f"kafka://{topic}/0", position), str(root))
    _write_dead_letter(old, str(root))
    observer.poll()

    new = [m for m in _manifests(root) if m["window_id"] != first.name]
    by_verdict = {v: sum(1 for m in new if m["validation"]["verdict"] == v) for v in verdicts}
    assert sum(by_verdict.values()) == len(windows) - 1
    assert {v: _value("ctpipe_windows_sealed_total", verdict=v) - before[v] for v in verdicts} == by_verdict
    from core.layout import window_id_start_ms

    newest_end_s = max(window_id_start_ms(m["window_id"]) / 1000 + 3600 for m in new)
    assert _value("ctpipe_watermark_timestamp_seconds", source=source_id(topic)) == newest_end_s
    assert _value("ctpipe_last_success_timestamp_seconds", job="stream") == 1_800_000_000.0
    newest = max(new, key=lambda m: m["window_id"])
    feature, completeness = sorted(newest["quality"]["completeness"].items())[0]
    assert _value("ctpipe_data_quality", window=newest["window_id"], dimension="completeness",
                  feature=feature) == completeness
    assert {r: _value("ctpipe_dead_letters_total", stage="stream", reason=r) - dead_before[r]
            for r in dead_before} == {"bad_json": 2, "not_utf8": 1}

    # A manifest that cannot be read: one warning, the rest of the poll goes on, and once it
    # reads the window is counted once.
    extra = root / "windows" / "20300101T0000Z" / "v1"
    extra.mkdir(parents=True)
    (extra / "MANIFEST.json").write_text("{")
    observer.poll()
    observer.poll()
    assert len(warnings) == 1 and "sealed windows" in warnings[0], warnings
    manifest = dict(newest, window_id="20300101T0000Z", version=1)
    (extra / "MANIFEST.json").write_text(json.dumps(manifest))
    observer.poll()
    verdict = manifest["validation"]["verdict"]
    assert _value("ctpipe_windows_sealed_total", verdict=verdict) - before[verdict] == by_verdict[verdict] + 1
    assert _value("ctpipe_watermark_timestamp_seconds", source=source_id(topic)) == window_id_start_ms(
        "20300101T0000Z") / 1000 + 3600
    assert len(warnings) == 2 and "readable again" in warnings[1], warnings


def test_without_a_port_or_a_pushgateway_nothing_is_observed(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    config = _config(tmp_path / "store", {"bootstrap_servers": f"127.0.0.1:{closed}", "topic": "ev"})
    exporter = Exporter(config)
    assert not exporter.enabled and exporter.observer is None
    exporter.start()
    exporter.stop()
    assert capsys.readouterr().err == ""  # no poll ran: it would have warned about the broker
    assert Exporter(_config(tmp_path / "store", {"bootstrap_servers": f"127.0.0.1:{closed}", "topic": "ev"},
                            metrics={"pushgateway": "127.0.0.1:9"})).enabled
