"""``ctpipe gen --to-kafka TOPIC [--rate N]``: the synthetic events produced to a Kafka topic.

Each event is one message: value = the JSON line, key = its ``device_id`` (so one device's events
stay in order in one partition); malformed lines are sent with no key. Connection and security
come from ``source.kafka`` (secrets from the environment or files, never from YAML).
"""
from __future__ import annotations

from typing import Iterable, Optional

from core.errors import ConfigError
from transforms.kafka_source import produce


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
    from pipeline.kafka_client import client_kwargs

    counts = {"valid": 0, "malformed": 0}
    produced = produce(client_kwargs(config.source.kafka), topic, keyed_messages(lines, counts), rate=rate)
    return {"topic": topic, "produced": produced, **counts}
