"""A topic deleted and recreated under the same name is recognised by its Kafka topic id.

Before, only a recreated topic shorter than the checkpoint's offsets was noticed; a longer one
was read on from the old offsets, skipping the new topic's first records and sealing the rest
as if they followed the old ones.
"""
from __future__ import annotations

import json
import os

import pytest
from kafka import KafkaAdminClient

from core.errors import InputError
from pipeline.checkpoint import CheckpointStore
from pipeline.config import config_from_dict
from pipeline.stream import run_stream
from transforms.kafka.produce import produce
from transforms.kafka.source import topic_id

pytestmark = pytest.mark.slow


def _event(i: int, hour: int) -> bytes:
    return json.dumps({"id": f"e-{hour}-{i}", "ts": f"2026-11-27T{hour:02d}:{i % 60:02d}:00Z", "device_id": "d",
                       "firmware": "v2", "temperature": 20.0, "vibration": 0.1, "humidity": 40.0,
                       "label": 1}).encode()


def _wait_for_topic_deleted(bootstrap: list, topic: str) -> None:
    import time

    deadline = time.monotonic() + 60
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)  # one client, polled for the broker's metadata
    try:
        while time.monotonic() < deadline:
            if topic not in admin.list_topics():
                return
    finally:
        admin.close()
    raise AssertionError(f"topic {topic} still listed 60 s after its deletion")


def test_a_recreated_topic_is_refused_and_nothing_is_read(tmp_path, direct_options, kafka_broker, kafka_topic):
    root = str(tmp_path / "store")
    config = config_from_dict({
        "storage": {"root": root}, "window": {"size": "1h", "allowed_lateness": "0s"},
        "source": {"kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic}}})
    produce(kafka_broker.client_kwargs, kafka_topic, [(None, _event(i, 0)) for i in range(20)], partitions=1)
    run_stream(config, direct_options, until_idle=True)
    store = CheckpointStore(root, kafka_topic)
    first = store.load()
    assert first.offsets == {0: 20} and first.topic_id == topic_id(kafka_broker.client_kwargs, kafka_topic)

    bootstrap = kafka_broker.client_kwargs["bootstrap_servers"]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([kafka_topic])
    finally:
        admin.close()
    _wait_for_topic_deleted(bootstrap, kafka_topic)
    # the new topic is longer than the old one: offsets alone cannot tell
    produce(kafka_broker.client_kwargs, kafka_topic, [(None, _event(i, 1)) for i in range(30)], partitions=1)
    assert topic_id(kafka_broker.client_kwargs, kafka_topic) != first.topic_id

    tree_before = sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs)
    with pytest.raises(InputError, match="deleted and recreated") as caught:
        run_stream(config, direct_options, until_idle=True)
    assert first.topic_id in str(caught.value) and store.path in str(caught.value)
    assert store.load() == first, "the checkpoint is untouched"
    tree_after = sorted(os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs)
    assert [p for p in tree_after if p not in tree_before and not p.startswith(("locks", ".lock"))] == []
