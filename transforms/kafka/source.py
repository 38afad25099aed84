"""Reading Kafka: bounded offset ranges (kafka-python, manual assignment), offsets, and the
unbounded cross-language read for streaming runners.

The data path never joins a consumer group: every read is ``assign`` + ``seek`` on one
partition and stops at a fixed end offset, so a micro-batch cycle reads exactly
[checkpointed offset, end offset fixed at cycle start) per partition (see DESIGN.md, "Checkpoint
protocol"). Consumer-group offsets are only *committed* (``commit_group_offsets``), after the
checkpoint, so Kafka tooling shows the pipeline's lag.

``client_kwargs`` is one mapping of kafka-python settings (``transforms.kafka.client.client_kwargs``
builds it from the config); each client class here receives only the keys it understands.
"""
from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import apache_beam as beam
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.structs import OffsetAndMetadata

from core.errors import InputError
from core.records import SourceRecord
from transforms.kafka.client import DEFAULT_ISOLATION_LEVEL

DEFAULT_TIMEOUT_S = 15.0
_POLL_MS = 200
_KNOWN_KEYS = (set(KafkaConsumer.DEFAULT_CONFIG) | set(KafkaProducer.DEFAULT_CONFIG)
               | set(KafkaAdminClient.DEFAULT_CONFIG))


class KafkaSourceError(InputError):
    """A Kafka read, offset lookup, commit or produce could not be completed (broker unreachable,
    login or TLS refused, topic missing, offsets gone): an input problem, exit code 3."""


@dataclass(frozen=True)
class OffsetRange:
    """Offsets [start, end) of one topic partition (end exclusive)."""

    topic: str
    partition: int
    start: int
    end: int

    def __len__(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class KafkaRecord:
    """One Kafka message and its source position."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


# ---------------------------------------------------------------------------------------------
# Client construction


def _bootstrap(client_kwargs: Mapping[str, Any]) -> str:
    servers = client_kwargs.get("bootstrap_servers")
    return servers if isinstance(servers, str) else ",".join(servers or [])


def kwargs_for(client_cls: type, client_kwargs: Mapping[str, Any],
               timeout_s: float = DEFAULT_TIMEOUT_S, **overrides: Any) -> dict[str, Any]:
    """The subset of ``client_kwargs`` that ``client_cls`` accepts, plus ``overrides``.

    A key no kafka-python client knows is a typo and raises ValueError. ``bootstrap_timeout_ms``
    defaults to ``timeout_s`` so an unreachable broker fails in bounded time. The mapping's type
    is kept, so a password-masking mapping stays masked.
    """
    unknown = set(client_kwargs) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown kafka-python settings: {sorted(unknown)}")
    out = copy.copy(client_kwargs) if isinstance(client_kwargs, dict) else dict(client_kwargs)
    if hasattr(out, "resolve_secrets"):
        out.resolve_secrets()  # a copy or an unpickled mapping (a worker) reads its secrets here
    for key in list(out):
        if key not in client_cls.DEFAULT_CONFIG:
            del out[key]
    out.setdefault("bootstrap_timeout_ms", int(timeout_s * 1000))
    out.update(overrides)
    return out


_FIRST_BOOTSTRAP_S = 3.0
"""A client that has not bootstrapped after this long gets its cause probed: a refused login or
a failed TLS verification fails at once, anything else keeps trying until the full timeout."""


def _connect(client_cls: type, client_kwargs: Mapping[str, Any], timeout_s: float,
             **overrides: Any):
    deadline = time.monotonic() + timeout_s
    try:
        return client_cls(**kwargs_for(client_cls, client_kwargs, min(timeout_s, _FIRST_BOOTSTRAP_S), **overrides))
    except (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError) as exc:
        reason = _probe_reason(client_kwargs, timeout_s)
        final = _explain(client_kwargs, reason)
        remaining = deadline - time.monotonic()
        if final is not None or remaining <= 0:
            raise final or _unreachable(client_kwargs, timeout_s, reason, exc) from exc
    try:
        return client_cls(**kwargs_for(client_cls, client_kwargs, remaining, **overrides))
    except (kafka_errors.KafkaTimeoutError, kafka_errors.KafkaConnectionError) as exc:
        reason = _probe_reason(client_kwargs, timeout_s)
        raise _explain(client_kwargs, reason) or _unreachable(client_kwargs, timeout_s, reason, exc) from exc


def _probe(client_kwargs: Mapping[str, Any], timeout_s: float) -> Optional[BaseException]:
    """Why one connection to the first bootstrap server fails (refused, TLS handshake, SASL
    login), or None when it succeeds.

    kafka-python retries a failed bootstrap until its timeout and then reports only the timeout;
    this makes one connection through its connection manager (kafka.net, kafka-python 3.0; the
    lock pins 3.0.x) to learn the broker's actual answer.
    """
    try:
        from kafka.net.manager import KafkaConnectionManager
        from kafka.net.selector import NetworkSelector
    except ImportError:  # another kafka-python layout: no probe, the generic message stands
        return None
    config = kwargs_for(KafkaConsumer, client_kwargs, timeout_s)
    net = NetworkSelector(**config)
    manager = KafkaConnectionManager(net, **config)

    async def attempt():
        node = manager.cluster.bootstrap_brokers()[0]
        await manager.get_connection(node.node_id, timeout_ms=int(timeout_s * 1000), pop_on_close=False,
                                     refresh_metadata_on_err=False)

    try:
        net.run(attempt)
        return None
    except Exception as exc:  # the failure is the answer
        return exc
    finally:
        manager.close()
        net.close()


def _probe_reason(client_kwargs: Mapping[str, Any], timeout_s: float) -> Optional[BaseException]:
    sasl = str(client_kwargs.get("security_protocol", "")).startswith("SASL_")
    # kafka-python 3.0.12 drops a response that arrives together with the connection's close (the
    # broker answers a failed login and closes at once), so a refused login shows up as "socket
    # disconnected" about half the time: probe a few times for the broker's own answer.
    reason: Optional[BaseException] = None
    for _attempt in range(4 if sasl else 1):
        reason = _probe(client_kwargs, min(timeout_s, 10.0))
        if not (sasl and isinstance(reason, kafka_errors.KafkaConnectionError) and "disconnected" in str(reason)):
            break
    return reason


_ERROR_PREFIX = re.compile(r"^(\[Error -?\d+\] )?(\w+Error: )*")
_SSL_SOURCE = re.compile(r" \(_ssl\.c:\d+\)")


def _detail(reason: Optional[BaseException]) -> str:
    return _SSL_SOURCE.sub("", _ERROR_PREFIX.sub("", str(reason))) if reason is not None else ""


def _explain(client_kwargs: Mapping[str, Any], reason: Optional[BaseException]) -> Optional[KafkaSourceError]:
    """The error for a definitive refusal (SASL login, TLS verification or handshake), naming the
    setting to fix; None when ``reason`` may be transient (broker down, restarting)."""
    bootstrap = _bootstrap(client_kwargs)
    settings = getattr(client_kwargs, "settings", {})
    detail = _detail(reason)
    protocol = client_kwargs.get("security_protocol", "PLAINTEXT")
    user = client_kwargs.get("sasl_plain_username")
    mechanism = client_kwargs.get("sasl_mechanism")
    check_credentials = (f"check the password from {settings.get('password', 'sasl_plain_password')} and the "
                         f"user from {settings.get('user', 'sasl_plain_username')}")
    if isinstance(reason, kafka_errors.SaslAuthenticationFailedError):
        return KafkaSourceError(f"Kafka at {bootstrap} refused the {mechanism} login of user {user!r} ({detail}); "
                                f"{check_credentials}")
    if str(protocol).startswith("SASL_") and "disconnected" in detail:
        return KafkaSourceError(
            f"Kafka at {bootstrap} closed the connection during the {mechanism} login of user {user!r} (what "
            f"a broker does after refusing the credentials); {check_credentials} (and that the listener is "
            f"{protocol}: source.kafka.security_protocol)")
    cafile = settings.get("cafile", f"ssl_cafile ({client_kwargs.get('ssl_cafile') or 'unset'})")
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        verify = detail.split("] ", 1)[-1].rstrip(".")  # "certificate verify failed: <why>"
        if "mismatch" in verify:
            return KafkaSourceError(
                f"TLS handshake with Kafka at {bootstrap} failed: {verify}: the broker certificate does not "
                "name the host in source.kafka.bootstrap_servers; connect with a host name the certificate "
                "holds (keep source.kafka.ssl_check_hostname on)")
        return KafkaSourceError(
            f"TLS handshake with Kafka at {bootstrap} failed: {verify}; {cafile} must hold the CA that "
            "signed the brokers' certificates")
    if "Handshake failed" in detail:
        return KafkaSourceError(
            f"TLS handshake with Kafka at {bootstrap} failed ({detail}); is it a TLS listener? check "
            f"source.kafka.security_protocol ({protocol}) and bootstrap_servers")
    return None


def _unreachable(client_kwargs: Mapping[str, Any], timeout_s: float, reason: Optional[BaseException],
                 exc: BaseException) -> KafkaSourceError:
    return KafkaSourceError(
        f"cannot reach Kafka at {_bootstrap(client_kwargs)} within {timeout_s:g} s "
        f"({_detail(reason) or type(exc).__name__}); check bootstrap_servers, source.kafka.security_protocol "
        "and that the broker is up")


def _isolation(client_kwargs: Mapping[str, Any]) -> str:
    """The isolation level of ctpipe's reads: the configured one, read_committed when unset."""
    return client_kwargs.get("isolation_level") or DEFAULT_ISOLATION_LEVEL


# codec -> (kafka.codec check, the package that provides it)
_CODECS = {"gzip": ("has_gzip", "Python's gzip module"), "snappy": ("has_snappy", "python-snappy"),
           "lz4": ("has_lz4", "lz4"), "zstd": ("has_zstd", "zstandard")}


def require_codecs() -> None:
    """Raise KafkaSourceError unless kafka-python can decompress every codec a producer may use.

    A batch whose codec is missing does not fail cleanly: kafka-python 3.0.12 spins inside
    ``poll()`` on it forever. Producers choose the codec, so all four are needed before any read.
    """
    from kafka import codec

    missing = {name: package for name, (check, package) in _CODECS.items() if not getattr(codec, check)()}
    if missing:
        raise KafkaSourceError(
            f"kafka-python here cannot decompress {', '.join(missing)} record batches: install "
            f"{', '.join(missing.values())} into this Python environment (requirements.lock pins them; "
            "kafka-python imports the `snappy` module of python-snappy, cramjam alone is not enough)")


def _data_consumer(client_kwargs: Mapping[str, Any], timeout_s: float) -> KafkaConsumer:
    """A group-less consumer for assign + seek reads; out-of-range offsets raise, never reset."""
    require_codecs()
    return _connect(KafkaConsumer, client_kwargs, timeout_s, group_id=None,
                    enable_auto_commit=False, auto_offset_reset="none",
                    allow_auto_create_topics=False, isolation_level=_isolation(client_kwargs))


def check_connection(client_kwargs: Mapping[str, Any], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Connect once and close: a refused login, a failed TLS handshake or a broker that cannot be
    reached raises KafkaSourceError naming the setting to fix. ``ctpipe stream`` calls it before it
    loads the rest of the pipeline (TensorFlow, TFDV), so such a mistake is reported at once."""
    _data_consumer(client_kwargs, timeout_s).close()


# ---------------------------------------------------------------------------------------------
# Offsets


def _partitions(consumer: KafkaConsumer, topic: str, client_kwargs: Mapping[str, Any]) -> list[int]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise KafkaSourceError(f"Kafka topic {topic!r} does not exist on {_bootstrap(client_kwargs)} "
                               "(or this client may not describe it); create it or fix the topic name")
    return sorted(partitions)


def _list_offsets(consumer: KafkaConsumer, tps: list[TopicPartition], which: str,
                  client_kwargs: Mapping[str, Any], timeout_s: float) -> dict[TopicPartition, int]:
    lookup = consumer.end_offsets if which == "end" else consumer.beginning_offsets
    try:
        return lookup(tps, timeout_ms=int(timeout_s * 1000))
    except kafka_errors.KafkaTimeoutError as exc:
        raise KafkaSourceError(f"{which} offsets of Kafka topic {tps[0].topic!r} on "
                               f"{_bootstrap(client_kwargs)} not returned within {timeout_s:g} s"
                               ) from exc


def _offsets(client_kwargs: Mapping[str, Any], topic: str, which: str,
             timeout_s: float) -> dict[int, int]:
    consumer = _connect(KafkaConsumer, client_kwargs, timeout_s, group_id=None,
                        enable_auto_commit=False, auto_offset_reset="none",
                        allow_auto_create_topics=False, isolation_level=_isolation(client_kwargs))
    try:
        tps = [TopicPartition(topic, p) for p in _partitions(consumer, topic, client_kwargs)]
        found = _list_offsets(consumer, tps, which, client_kwargs, timeout_s)
        return {tp.partition: found[tp] for tp in tps}
    except kafka_errors.KafkaError as exc:  # the broker went away after the client connected
        raise KafkaSourceError(f"{which} offsets of Kafka topic {topic!r} on {_bootstrap(client_kwargs)} "
                               f"failed: {_detail(exc) or type(exc).__name__}; check that the broker is up "
                               "and rerun") from exc
    finally:
        consumer.close()


def topic_id(client_kwargs: Mapping[str, Any], topic: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Optional[str]:
    """The topic's id (Kafka 2.8+, KIP-516): a topic deleted and recreated under the same name gets
    a new one, which is how a checkpoint tells the topic it read from a new topic whose offsets
    restarted. None when the broker does not report ids."""
    consumer = _connect(KafkaConsumer, client_kwargs, timeout_s, group_id=None, enable_auto_commit=False,
                        allow_auto_create_topics=False)
    try:
        _partitions(consumer, topic, client_kwargs)
        # kafka-python keeps the ids of its last metadata response on the client's cluster view
        found = consumer._client.cluster.topic_id(topic)
        return None if found is None or found.int == 0 else str(found)
    except kafka_errors.KafkaError as exc:
        raise KafkaSourceError(f"metadata of Kafka topic {topic!r} on {_bootstrap(client_kwargs)} failed: "
                               f"{_detail(exc) or type(exc).__name__}; check that the broker is up and rerun") from exc
    finally:
        consumer.close()


def end_offsets(client_kwargs: Mapping[str, Any], topic: str,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[int, int]:
    """Per partition, the exclusive end offset a read may plan against.

    Under ``isolation_level`` read_committed (the default) that is the last stable offset: the
    first offset of the oldest open transaction, else the high watermark. A cycle planned against
    it never waits for a transaction still in flight. Under read_uncommitted it is the high
    watermark (the offset the next produced message will get).
    """
    return _offsets(client_kwargs, topic, "end", timeout_s)


def beginning_offsets(client_kwargs: Mapping[str, Any], topic: str,
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[int, int]:
    """Per partition, the earliest offset still on the broker."""
    return _offsets(client_kwargs, topic, "beginning", timeout_s)


def plan_ranges(start: Mapping[int, int], end: Mapping[int, int], topic: str,
                max_records_per_split: int) -> list[OffsetRange]:
    """Split each partition's [start, end) into ranges of at most ``max_records_per_split``.

    ``start`` and ``end`` must cover the same partitions (merge ``beginning_offsets`` into a
    checkpoint for partitions it has not seen). Empty partitions yield no range. Ordered by
    partition, then offset.
    """
    if max_records_per_split < 1:
        raise ValueError(f"max_records_per_split must be >= 1, not {max_records_per_split}")
    if set(start) != set(end):
        raise ValueError(f"topic {topic!r}: start offsets cover partitions {sorted(start)} but end "
                         f"offsets cover {sorted(end)}; give a start offset for every partition")
    ranges: list[OffsetRange] = []
    for partition in sorted(end):
        lo, hi = start[partition], end[partition]
        if lo < 0 or lo > hi:
            raise ValueError(f"topic {topic!r} partition {partition}: start offset {lo} is not in "
                             f"[0, end offset {hi}] (was the topic recreated?)")
        for chunk_start in range(lo, hi, max_records_per_split):
            ranges.append(OffsetRange(topic, partition, chunk_start,
                                      min(chunk_start + max_records_per_split, hi)))
    return ranges


# ---------------------------------------------------------------------------------------------
# Reading


def _read_with(consumer: KafkaConsumer, rng: OffsetRange, timeout_s: float) -> Iterator[KafkaRecord]:
    """Yield the records of ``rng`` through an already connected, group-less consumer.

    Stops once the position reaches ``rng.end``, so offsets missing in [start, end) (compacted
    away, transaction markers) are skipped, not waited for. Raises KafkaSourceError when no
    progress is made for ``timeout_s`` or the start offset is no longer on the broker.
    """
    if rng.end <= rng.start:
        return
    tp = TopicPartition(rng.topic, rng.partition)
    consumer.assign([tp])
    consumer.seek(tp, rng.start)
    position = rng.start
    deadline = time.monotonic() + timeout_s
    last_error: Optional[BaseException] = None
    while position < rng.end:
        try:
            batch = consumer.poll(timeout_ms=_POLL_MS)
            new_position = consumer.position(tp, timeout_ms=int(timeout_s * 1000))
        except kafka_errors.OffsetOutOfRangeError as exc:
            raise KafkaSourceError(
                f"{rng}: offset {position} is no longer on the broker (retention deleted it); "
                "the data was lost before it was read") from exc
        except kafka_errors.KafkaError as exc:  # broker away (restarting?): retry until the deadline
            last_error = exc
            if time.monotonic() > deadline:
                raise KafkaSourceError(
                    f"{rng}: no progress past offset {position} within {timeout_s:g} s "
                    f"({_detail(exc) or type(exc).__name__}); check that the broker is up and rerun") from exc
            time.sleep(_POLL_MS / 1000)  # back off before the next attempt
            continue
        for record in batch.get(tp, ()):
            if record.offset >= rng.end:
                return
            if record.offset >= rng.start:
                yield KafkaRecord(record.topic, record.partition, record.offset, record.key,
                                  record.value, record.timestamp)
        if new_position is not None and new_position > position:
            position = new_position
            deadline = time.monotonic() + timeout_s
        elif time.monotonic() > deadline:
            why = f"last error: {_detail(last_error)}" if last_error is not None else (
                "broker down, or the range ends past the partition's end?")
            raise KafkaSourceError(f"{rng}: no progress past offset {position} within {timeout_s:g} s ({why})")


class _ReadRangeDoFn(beam.DoFn):
    """OffsetRange -> its KafkaRecords; one group-less consumer per DoFn instance."""

    def __init__(self, client_kwargs: Mapping[str, Any], timeout_s: float):
        self._client_kwargs = client_kwargs
        self._timeout_s = timeout_s
        self._consumer: KafkaConsumer | None = None
        # Beam counter ``records_in``: the driver exports it as ctpipe_records_in_total{stage="stream"}.
        self._records = beam.metrics.Metrics.counter("ctpipe", "records_in")

    def setup(self) -> None:
        self._consumer = _data_consumer(self._client_kwargs, self._timeout_s)

    def process(self, rng: OffsetRange) -> Iterator[KafkaRecord]:
        for record in _read_with(self._consumer, rng, self._timeout_s):
            self._records.inc()
            yield record

    def teardown(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class ReadKafkaRanges(beam.PTransform):
    """PCollection[OffsetRange] -> PCollection[KafkaRecord].

    Reshuffles the ranges first so they spread over workers instead of staying fused to the
    single Create/planning step.
    """

    def __init__(self, client_kwargs: Mapping[str, Any], timeout_s: float = DEFAULT_TIMEOUT_S):
        super().__init__()
        kwargs_for(KafkaConsumer, client_kwargs)  # fail at graph construction on a bad key
        self._client_kwargs = client_kwargs
        self._timeout_s = timeout_s

    def expand(self, ranges):
        return (ranges
                | "Reshuffle" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(_ReadRangeDoFn(self._client_kwargs, self._timeout_s)))


# ---------------------------------------------------------------------------------------------
# Consumer-group offsets (for lag visibility only)


def commit_group_offsets(client_kwargs: Mapping[str, Any], group_id: str, topic: str,
                         offsets: Mapping[int, int], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Commit ``offsets`` (partition -> next offset to read) for ``group_id`` without joining it.

    The consumer is assigned manually, so no JoinGroup/rebalance happens; the commit uses no
    generation, which brokers accept for groups without active members (what Beam's KafkaIO does).
    """
    if not offsets:
        return
    consumer = _connect(KafkaConsumer, client_kwargs, timeout_s, group_id=group_id,
                        enable_auto_commit=False, allow_auto_create_topics=False)
    try:
        to_commit = {TopicPartition(topic, p): OffsetAndMetadata(off, "", -1)
                     for p, off in sorted(offsets.items())}
        consumer.assign(list(to_commit))
        try:
            consumer.commit(to_commit, timeout_ms=int(timeout_s * 1000))
        except kafka_errors.KafkaError as exc:
            raise KafkaSourceError(f"committing offsets {dict(offsets)} of topic {topic!r} for group "
                                   f"{group_id!r} on {_bootstrap(client_kwargs)} failed: {exc!r}"
                                   ) from exc
    finally:
        consumer.close(autocommit=False)


@dataclass(frozen=True)
class GroupOffsets:
    """One look at a consumer group's position on a topic, per partition: ``committed`` (None where
    the group has committed nothing), ``end`` (as ``end_offsets``: the last stable offset under
    read_committed) and ``beginning`` (the earliest offset still on the broker)."""

    committed: dict
    end: dict
    beginning: dict

    def lag(self) -> dict:
        """Per partition, the records between the committed offset and the end (never negative);
        a partition without a commit counts from its beginning (``auto.offset.reset: earliest``,
        where the unbounded read starts without one)."""
        out = {}
        for partition, end in self.end.items():
            start = self.committed.get(partition)
            if start is None:
                start = self.beginning.get(partition, 0)
            out[partition] = max(0, end - start)
        return out


def group_offsets(client_kwargs: Mapping[str, Any], group_id: str, topic: str,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> GroupOffsets:
    """The committed offsets of ``group_id`` and the topic's end and beginning offsets, read with one
    client that never joins the group (no JoinGroup, no rebalance of the group's real members)."""
    consumer = _connect(KafkaConsumer, client_kwargs, timeout_s, group_id=group_id, enable_auto_commit=False,
                        auto_offset_reset="none", allow_auto_create_topics=False,
                        isolation_level=_isolation(client_kwargs))
    try:
        tps = [TopicPartition(topic, p) for p in _partitions(consumer, topic, client_kwargs)]
        end = _list_offsets(consumer, tps, "end", client_kwargs, timeout_s)
        beginning = _list_offsets(consumer, tps, "beginning", client_kwargs, timeout_s)
        committed = {tp.partition: consumer.committed(tp, timeout_ms=int(timeout_s * 1000)) for tp in tps}
        return GroupOffsets(committed, {tp.partition: end[tp] for tp in tps},
                            {tp.partition: beginning[tp] for tp in tps})
    except kafka_errors.KafkaError as exc:
        raise KafkaSourceError(f"offsets of consumer group {group_id!r} on Kafka topic {topic!r} at "
                               f"{_bootstrap(client_kwargs)} failed: {_detail(exc) or type(exc).__name__}; check "
                               "that the broker is up") from exc
    finally:
        consumer.close(autocommit=False)


# ---------------------------------------------------------------------------------------------
# Records as the rest of the graph sees them


def source_uri(topic: str, partition: int) -> str:
    """The ``source`` of a record read from Kafka: ``kafka://<topic>/<partition>``."""
    return f"kafka://{topic}/{partition}"


def partition_of(source: str) -> int:
    """Partition of a ``kafka://topic/partition`` source string."""
    return int(source.rsplit("/", 1)[1])


def ingest_time(timestamp_ms: Optional[int]) -> Optional[int]:
    """A Kafka record timestamp as an ingest time: None when the record has none (-1)."""
    return timestamp_ms if timestamp_ms is not None and timestamp_ms >= 0 else None


def to_source_record(record: KafkaRecord) -> SourceRecord:
    return SourceRecord(source_uri(record.topic, record.partition), str(record.offset), record.value,
                        None, ingest_time(record.timestamp_ms))


# ---------------------------------------------------------------------------------------------
# Unbounded (streaming runners)


def _read_from_kafka(consumer_config: dict, topic: str, expansion_service: str) -> beam.PTransform:
    """Beam's cross-language Kafka read (with metadata, CreateTime timestamps, offsets committed
    when the runner finalizes a checkpoint), sending only the settings that are set.

    The Python SDK's ReadFromKafka (2.68) sends every field of its schema, unset ones as null, and a
    Java expansion service rejects a field it has no setter for: Beam 2.62's KafkaIO (the one that
    matches the Flink job server, jvm/engines.in) fails on ``dynamic_read_poll_interval_seconds``
    ("missing a setter"). Leaving the unset fields out of the payload keeps the same transform and
    URN and works with either version.
    """
    import typing

    import numpy as np
    from apache_beam.io import kafka as beam_kafka
    from apache_beam.transforms.external import ExternalTransform, NamedTupleBasedPayloadBuilder

    values = {"consumer_config": consumer_config, "topics": [topic],
              "key_deserializer": beam_kafka.ReadFromKafka.byte_array_deserializer,
              "value_deserializer": beam_kafka.ReadFromKafka.byte_array_deserializer,
              "commit_offset_in_finalize": True, "timestamp_policy": beam_kafka.ReadFromKafka.create_time_policy,
              "consumer_polling_timeout": 2, "redistribute": False, "redistribute_num_keys": np.int32(0),
              "allow_duplicates": False}
    fields = [(name, kind) for name, kind in beam_kafka.ReadFromKafkaSchema.__annotations__.items() if name in values]
    missing = set(values) - {name for name, _ in fields}
    if missing:
        raise RuntimeError(f"this Beam's ReadFromKafkaSchema has no field(s) {sorted(missing)}")
    schema = typing.NamedTuple("ReadFromKafkaSetFields", fields)
    return ExternalTransform(beam_kafka.ReadFromKafka.URN_WITH_METADATA,
                             NamedTupleBasedPayloadBuilder(schema(**values)), expansion_service)


class ReadKafkaUnbounded(beam.PTransform):
    """Cross-language Kafka read (KafkaIO through a Java expansion service) -> SourceRecords.

    With the expansion service of ``scripts/services.sh start beam-expansion`` (EMBEDDED
    environment, ``use_deprecated_read``) Flink runs the read natively: KafkaIO's UnboundedSource
    in the TaskManager JVMs, its reader positions in Flink's checkpoints, the consumer group's
    offsets committed when a checkpoint completes. The Java consumer's password is a config-provider
    reference (``transforms.kafka.client.java_consumer_config``), never the secret.
    """

    def __init__(self, kafka_cfg, expansion_service: Optional[str] = None):
        super().__init__()
        self._cfg = kafka_cfg
        self._expansion_service = expansion_service or getattr(kafka_cfg, "expansion_service", None)

    def expand(self, pbegin):
        from transforms.kafka.client import java_consumer_config

        if not self._expansion_service:
            from core.errors import ConfigError

            raise ConfigError("the unbounded Kafka read needs a Java expansion service: set "
                              "source.kafka.expansion_service to its host:port (locally: `bash scripts/services.sh "
                              "start beam-expansion`, then CTPIPE_BEAM_KAFKA_EXPANSION_ENDPOINT from "
                              "`bash scripts/services.sh env`)")
        import grpc

        try:
            read = pbegin | "ReadFromKafka" >> _read_from_kafka(java_consumer_config(self._cfg), self._cfg.topic,
                                                                self._expansion_service)
        except grpc.RpcError as exc:  # the expansion request is the first call to the Java side
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            raise KafkaSourceError(
                f"cannot reach the Java expansion service for the Kafka read at {self._expansion_service} "
                f"(source.kafka.expansion_service; gRPC {exc.code().name}: {exc.details()}); start it (locally: "
                "`bash scripts/services.sh start beam-expansion`, then CTPIPE_BEAM_KAFKA_EXPANSION_ENDPOINT from "
                "`bash scripts/services.sh env`) or fix the address") from None
        return (read
                | "ToSourceRecord" >> beam.Map(lambda r: SourceRecord(
                    source_uri(r.topic, r.partition), str(r.offset), r.value, None, ingest_time(r.timestamp))))
