"""Producing to Kafka: topic creation, paced sends, and ``ctpipe gen --to-kafka`` messages.

Used by ``ctpipe gen --to-kafka``, the tests, the demos and the stream benchmark. Each generated
event is one message: value = the JSON line, key = its ``device_id`` (so one device's events stay
in order in one partition); malformed lines are sent with no key. Connection and security come
from ``source.kafka`` through ``transforms.kafka.client`` (secrets from the environment or files,
never from YAML).
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Optional

from kafka import KafkaAdminClient, KafkaProducer
from kafka import errors as kafka_errors

from core.errors import ConfigError
from transforms.kafka.client import client_kwargs
from transforms.kafka.source import DEFAULT_TIMEOUT_S, KafkaSourceError, _bootstrap, _connect, end_offsets


def ensure_topic(client_kwargs: Mapping[str, Any], topic: str, partitions: int,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Create ``topic`` with ``partitions`` partitions unless it exists; wait until it is usable.

    An existing topic with fewer partitions raises KafkaSourceError.
    """
    admin = _connect(KafkaAdminClient, client_kwargs, timeout_s)
    try:
        try:
            admin.create_topics({topic: {"num_partitions": partitions}},
                                timeout_ms=int(timeout_s * 1000))
        except kafka_errors.TopicAlreadyExistsError:
            pass
        admin.wait_for_topics([topic], timeout_ms=int(timeout_s * 1000))
    except kafka_errors.KafkaError as exc:
        raise KafkaSourceError(f"creating Kafka topic {topic!r} with {partitions} partitions on "
                               f"{_bootstrap(client_kwargs)} failed: {exc!r}") from exc
    finally:
        admin.close()
    have = end_offsets(client_kwargs, topic, timeout_s)
    if len(have) < partitions:
        raise KafkaSourceError(f"Kafka topic {topic!r} exists with {len(have)} partitions, "
                               f"fewer than the {partitions} asked for")


class _TokenBucket:
    """Paces calls to ``rate`` per second with bursts of at most ``capacity``."""

    def __init__(self, rate: float, capacity: float | None = None):
        if rate <= 0:
            raise ValueError(f"rate must be > 0 messages/s, not {rate}")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate / 10.0)
        self._tokens = self.capacity
        self._last = time.monotonic()

    def take(self) -> None:
        """Block until one token is available, then consume it."""
        while True:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            time.sleep((1.0 - self._tokens) / self.rate)


def produce(client_kwargs: Mapping[str, Any], topic: str,
            messages: Iterable[tuple[bytes | None, bytes | None]], rate: float | None = None,
            partitions: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Send (key, value) pairs to ``topic`` and flush; return how many were sent.

    ``rate`` paces sends to that many messages per second (token bucket); None sends as fast as
    possible. ``partitions`` first ensures the topic exists with that many partitions. Keys pick
    the partition (murmur2), so one device id's events stay in order in one partition. Raises
    KafkaSourceError if any send failed.
    """
    if partitions is not None:
        ensure_topic(client_kwargs, topic, partitions, timeout_s)
    bucket = _TokenBucket(rate) if rate else None
    failures: list[BaseException] = []
    producer = _connect(KafkaProducer, client_kwargs, timeout_s, acks="all", linger_ms=5)
    count = 0
    try:
        for key, value in messages:
            if bucket is not None:
                bucket.take()
            producer.send(topic, key=key, value=value).add_errback(failures.append)
            count += 1
        producer.flush(timeout=timeout_s)
    except kafka_errors.KafkaError as exc:
        raise KafkaSourceError(f"producing to Kafka topic {topic!r} on {_bootstrap(client_kwargs)} "
                               f"failed after {count} messages: {exc!r}") from exc
    finally:
        producer.close(timeout=timeout_s)
    if failures:
        raise KafkaSourceError(f"{len(failures)} of {count} messages to Kafka topic {topic!r} failed; "
                               f"first error: {failures[0]!r}")
    return count


def keyed_messages(lines: Iterable[tuple[bytes, Optional[dict]]], counts: dict):
    """(key, value) pairs of generated lines; counts valid and malformed lines into ``counts``."""
    for line, event in lines:
        if event is None:
            counts["malformed"] += 1
            yield None, line
        else:
            counts["valid"] += 1
            yield str(event.get("device_id", "")).encode("utf-8") or None, line


def produce_generated(config, topic: str, lines: Iterable[tuple[bytes, Optional[dict]]],
                      rate: Optional[float] = None) -> dict:
    """Produce ``lines`` (from ``pipeline.synthetic.generate``) to ``topic``; ``rate`` messages/s
    or as fast as possible. Returns {"topic", "produced", "valid", "malformed"}."""
    if config.source.kafka is None or not config.source.kafka.bootstrap_servers:
        raise ConfigError("gen --to-kafka needs source.kafka.bootstrap_servers in the config")
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate must be > 0 messages per second, not {rate}")
    counts = {"valid": 0, "malformed": 0}
    produced = produce(client_kwargs(config.source.kafka), topic, keyed_messages(lines, counts), rate=rate)
    return {"topic": topic, "produced": produced, **counts}
