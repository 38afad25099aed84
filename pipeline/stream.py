"""``ctpipe stream``: exactly-once micro-batches from Kafka into sealed windows (bounded mode).

One cycle (DESIGN.md, "Checkpoint protocol"):

1. Read the checkpoint. If it holds an ``in_flight`` plan, a previous attempt crashed mid-cycle:
   execute that plan again, unchanged. Otherwise fix this cycle's end offsets now and plan, per
   partition, [checkpointed offset, end offset) split into ranges; save the plan in the
   checkpoint (atomically) before anything else is written.
2. Ingest graph: ReadKafkaRanges (kafka-python, assign + seek, no group rebalances) -> DecodeAndCheck
   (decode, record checks) -> WritePendingParts: one part file per (window, offset range) and one dead-letter file per
   range, deterministic names, temp + rename (transforms/pending.py).
3. Watermark = min over partitions that have data of the newest event time seen, minus
   window.allowed_lateness (never moves back). Windows whose end is at or before it, and that
   either just passed it or received late parts this cycle, are sealed by the shared window graph
   (transforms/seal.SealWindows, the composite every graph uses) over all their parts: stats, validation, transform,
   MANIFEST last. Resealing unchanged parts is a no-op; changed parts give v<N+1>.
4. Save the checkpoint (offsets = the plan's ends, watermark, in_flight cleared) atomically.
5. Commit the offsets to the consumer group (lag visibility only; a failure there is reported
   and retried next cycle, never lost data).

A crash anywhere reruns the cycle from step 1 with the same plan: parts and dead-letter files are
rewritten under the same names with the same content, sealing is idempotent, so nothing is lost
and nothing is counted twice.

The watermark cannot be poisoned by one record: event times before 1970 or after 9999 are dead
letters (``event_time_out_of_range``), and so are event times more than ``event_time.max_future``
(default 1 day) ahead of the record's Kafka timestamp or of the time the cycle was planned,
whichever is earlier (``event_time_in_future``; the planning time is kept in the plan, so a replay
decodes the same way). Dead letters never enter the per-partition newest event times. Old data is
valid: the bound is relative to when a record was produced, not to today.

A partition that stops receiving data holds the watermark back (min over partitions that have
data) unless ``source.kafka.idle_partition_timeout`` is set: then a partition silent for that
long is left out of the min, and its later records may be late. A partition that no longer
exists (a topic recreated with fewer partitions) is left out. Part files are kept after sealing
(they are what makes resealing idempotent); ``ctpipe gc`` removes those of windows far behind the
watermark when ``retention.pending_parts`` says so (pipeline/gc.py). Dead letters written at ingest
that carry an event time are indexed per window beside its parts and read back at sealing from
that window's index only; they count toward their window's bad fraction (they are not written
twice).

What can still fail, and what to do: no record can make a cycle fail (decoding and the record
checks turn every bad record into a dead letter, and records that pass them fit the Arrow batch,
TFDV and the transform's dense inputs). A cycle still fails on causes outside the data: storage or
broker errors, or a preprocessing_fn that raises on some window. Then the command exits non-zero
with the error (and the stage and window it came from, with --debug the traceback), the checkpoint
keeps the plan ``in_flight``, and every rerun replays that plan: rewrites the same parts and dead
letters, and fails at the same place until the cause is fixed. Fix it (the code, the storage) and
rerun; nothing is lost or counted twice.

Transform: when <root>/transforms/CURRENT names a published transform (from a backfill or an
earlier stream cycle), windows are transformed with it; otherwise the transform
is analyzed over the windows being sealed and published.
"""
from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam

from core import layout, schema_store, storage
from core.errors import ConfigError, CtpipeError, InputError, StorageError, find_in_chain
from core.lock import StorageLock
from core.transform_store import current_transform
from core.version import code_version
from pipeline import collector, metrics, quality
from pipeline.backfill import WINDOWS_OUTPUT, columns_of_records, infer_and_store_schema, seal_chunks
from pipeline.checkpoint import Checkpoint, CheckpointStore
from pipeline.lease import handle_sigterm, root_lease, stop_if_terminating, wait_unless_terminating
from pipeline.specs import decode_spec, seal_spec, transform_scratch
from transforms.deadletter import WriteDeadLetters
from transforms.kafka.source import (
    KafkaSourceError,
    OffsetRange,
    ReadKafkaRanges,
    beginning_offsets,
    commit_group_offsets,
    end_offsets,
    plan_ranges,
    source_uri,
    to_source_record,
    topic_id,
)
from transforms.pending import (
    PartSettings,
    ReadPendingChunks,
    WritePendingParts,
    ingest_dead_letters,
    list_parts,
    window_end_ms,
    window_parts,
)
from transforms.record_checks import DecodeAndCheck
from transforms.run_outputs import WriteRunOutputs, read_run_outputs
from transforms.validation import feature_types

DEFAULT_MAX_RECORDS_PER_CYCLE = 500_000
SCHEMA_SAMPLE_RECORDS = 20_000
"""The first schema is inferred from at most this many records at the start of the first cycle."""


# --------------------------------------------------------------------------- pure planning


@dataclass(frozen=True)
class CyclePlan:
    cycle: int
    ranges: tuple
    """OffsetRanges read by this cycle, split by max_records_per_split."""
    ends: dict
    """partition -> offset the checkpoint moves to when the cycle completes."""
    date: str
    """UTC date (YYYYMMDD) of the first attempt: dead-letter folder and run id."""
    watermark_before_ms: Optional[int]
    planned_at_ms: Optional[int] = None
    """Wall-clock time of the first attempt: with each record's Kafka timestamp, the reference of
    ``event_time.max_future`` (kept in the plan, so a replay decodes exactly as the first attempt)."""

    @property
    def records(self) -> int:
        return sum(len(r) for r in self.ranges)

    def to_json(self) -> dict:
        return {"cycle": self.cycle, "ranges": [[r.topic, r.partition, r.start, r.end] for r in self.ranges],
                "ends": {str(p): o for p, o in sorted(self.ends.items())}, "date": self.date,
                "watermark_before_ms": self.watermark_before_ms, "planned_at_ms": self.planned_at_ms}

    @classmethod
    def from_json(cls, data: dict) -> "CyclePlan":
        return cls(int(data["cycle"]), tuple(OffsetRange(t, int(p), int(s), int(e)) for t, p, s, e in data["ranges"]),
                   {int(p): int(o) for p, o in data["ends"].items()}, data["date"], data["watermark_before_ms"],
                   data.get("planned_at_ms"))


def plan_cycle(checkpoint: Checkpoint, begin: dict, end: dict, topic: str, max_records_per_split: int,
               max_records_per_cycle: int, date: str, planned_at_ms: Optional[int] = None) -> CyclePlan:
    """Ranges of the next cycle: per partition [checkpoint offset, end), at most
    ``max_records_per_cycle`` records in all (shared equally by the partitions with data).

    Partitions the checkpoint has not seen start at their beginning offset. A checkpointed offset
    below the partition's beginning means retention deleted unread records: InputError.
    """
    if max_records_per_cycle < 1:
        raise ConfigError(f"--max-records-per-cycle must be >= 1, not {max_records_per_cycle}")
    start = {}
    for partition in sorted(end):
        offset = checkpoint.offsets.get(partition, begin.get(partition, 0))
        if offset < begin.get(partition, 0):
            raise InputError(
                f"Kafka topic {topic!r} partition {partition}: the checkpoint is at offset {offset} but the "
                f"broker's earliest offset is {begin[partition]}; records {offset}..{begin[partition] - 1} were "
                "deleted by retention before ctpipe read them. Raise the topic's retention; to continue "
                "anyway, move the checkpoint file away (the windows already sealed stay)")
        if offset > end[partition]:
            raise InputError(f"Kafka topic {topic!r} partition {partition}: the checkpoint is at offset "
                             f"{offset}, past the end {end[partition]}; was the topic deleted and recreated? "
                             "Point source.kafka.topic at the right topic or move the checkpoint away")
        start[partition] = offset
    with_data = [p for p in sorted(end) if end[p] > start[p]]
    capped = dict(end)
    if with_data:
        share = max(1, max_records_per_cycle // len(with_data))
        for partition in with_data:
            capped[partition] = min(end[partition], start[partition] + share)
    ranges = plan_ranges(start, capped, topic, max_records_per_split)
    return CyclePlan(checkpoint.cycle + 1, tuple(ranges), capped, date, checkpoint.watermark_ms, planned_at_ms)


def cap_end_offsets(end: dict, until: dict, checkpointed: dict, begin: dict) -> dict:
    """``end`` capped at ``until`` (the end offsets a bounded run recorded at its start).

    A partition missing from ``until`` (created after the start) is capped at where reading it
    would start, so the run does not read it; a checkpoint past the end or below the beginning
    still reaches ``plan_cycle``, which reports it."""
    out = {}
    for partition, offset in end.items():
        stop = until.get(partition, checkpointed.get(partition, begin.get(partition, 0)))
        out[partition] = min(offset, stop)
    return out


def merge_newest(before: dict, cycle: dict) -> dict:
    """Newest event time per partition after a cycle (never moves back)."""
    out = dict(before)
    for partition, ts in cycle.items():
        out[partition] = max(out.get(partition, ts), ts)
    return out


def idle_partitions(last_records_at: dict, now_s: float, timeout_s: Optional[float]) -> set:
    """Partitions whose last records were read more than ``timeout_s`` ago (none when off)."""
    if timeout_s is None:
        return set()
    return {p for p, at in last_records_at.items() if now_s - at > timeout_s}


def compute_watermark(newest_per_partition: dict, lateness_s: int, previous: Optional[int],
                      idle: frozenset = frozenset(), partitions: Optional[frozenset] = None) -> Optional[int]:
    """min over partitions with data (idle ones left out, unless all are idle) of their newest
    event time, minus the allowed lateness; never below ``previous``. None while no partition has
    data. ``partitions``: the topic's partitions now; one that no longer exists (the topic was
    recreated with fewer) is left out.

    Event times in ``newest_per_partition`` come from events only: a record whose event time is
    impossible, or too far ahead of its ingest time, is a dead letter at decoding
    (transforms/decode.py) and never gets here, so one bad record cannot move the watermark."""
    present = {p: t for p, t in newest_per_partition.items() if partitions is None or p in partitions}
    active = {p: t for p, t in present.items() if p not in idle} or present
    if not active:
        return previous
    watermark = min(active.values()) - lateness_s * 1000
    return watermark if previous is None else max(previous, watermark)


def windows_to_seal(pending: list, touched: set, size_s: int, before: Optional[int],
                    after: Optional[int]) -> list:
    """Windows to (re)seal this cycle: those whose end passed the watermark in this cycle, and
    those already sealed that received late parts this cycle."""
    if after is None:
        return []
    out = []
    for wid in sorted(pending):
        end = window_end_ms(wid, size_s)
        if end <= after and (before is None or end > before or wid in touched):
            out.append(wid)
    return out


# --------------------------------------------------------------------------- graphs


def schema_sample(ranges, limit: int = SCHEMA_SAMPLE_RECORDS) -> list:
    """The first ``limit`` records of the planned ranges, spread over the partitions."""
    by_partition: dict = {}
    for rng in ranges:
        by_partition.setdefault(rng.partition, []).append(rng)
    share = max(1, limit // max(1, len(by_partition)))
    out = []
    for partition in sorted(by_partition):
        left = share
        for rng in by_partition[partition]:
            if left <= 0:
                break
            take = min(len(rng), left)
            out.append(OffsetRange(rng.topic, rng.partition, rng.start, rng.start + take))
            left -= take
    return out


def infer_schema_from_ranges(config, plan: "CyclePlan", kwargs, options, fence=None) -> int:
    """First cycle on an empty store: infer the schema from a sample of the planned records
    (``schema_sample``) and store it."""
    ranges = schema_sample(plan.ranges)
    return infer_and_store_schema(
        config, options,
        lambda p, spec: columns_of_records(p | "Ranges" >> beam.Create(list(ranges)) | "Read" >> ReadKafkaRanges(kwargs)
                                           | "ToSource" >> beam.Map(to_source_record), spec),
        f"the first {sum(len(r) for r in ranges)} records of Kafka topic {config.source.kafka.topic!r}",
        fence=fence)


def run_ingest(config, plan: CyclePlan, sid: str, kwargs, options, schema,
               collected_before_ms: Optional[int] = None) -> dict:
    """Ingest graph of one cycle: ranges -> parts + dead letters. Returns its summary, read back
    from the storage root (runs/<cycle run id>/ingest-*), where the workers wrote it.
    ``collected_before_ms``: the checkpoint's ``parts_collected_before_ms``."""
    root = config.storage.root
    run_id = seal_run_id(plan, sid)
    settings = PartSettings(root, sid, config.window.size_s, plan.watermark_before_ms,
                            config.window.late_data, plan.date, collected_before_ms)
    pipeline = beam.Pipeline(options=options)
    records = (pipeline
               | "Ranges" >> beam.Create(list(plan.ranges))
               | "ReadKafka" >> ReadKafkaRanges(kwargs)
               | "ToSourceRecord" >> beam.Map(to_source_record))
    # Record checks run here, not only at sealing: their dead letters then get the range's
    # deterministic file name, so resealing a window later (late data) cannot count them again.
    events, dead = records | "DecodeAndCheck" >> DecodeAndCheck(decode_spec(config, schema, plan.planned_at_ms),
                                                                schema)
    parts, dead_files, newest = (events, dead) | "WriteParts" >> WritePendingParts(settings, plan.ranges)
    _ = parts | "PartOutputs" >> WriteRunOutputs(root, run_id, "ingest-parts", lambda d: d["name"])
    _ = dead_files | "DeadOutputs" >> WriteRunOutputs(root, run_id, "ingest-dead", lambda d: d["name"])
    _ = (newest
         | "NewestDicts" >> beam.MapTuple(lambda p, t: {"partition": p, "newest_ms": t})
         | "NewestOutputs" >> WriteRunOutputs(root, run_id, "ingest-newest", lambda d: f"p{d['partition']:05d}"))
    with collector.tuned():
        result = pipeline.run()
        result.wait_until_finish()
    counters = metrics.record_beam_counters(result, "stream", "kafka")
    return {"parts": read_run_outputs(root, run_id, "ingest-parts"),
            "dead": sum(d["dead_letters"] for d in read_run_outputs(root, run_id, "ingest-dead")),
            "newest": {int(d["partition"]): int(d["newest_ms"])
                       for d in read_run_outputs(root, run_id, "ingest-newest")},
            "counters": counters}


def run_seal(config, options, sid: str, window_ids: list, run_id: str, schema, schema_text: str,
             schema_version: int, fence=None) -> list:
    """Seal ``window_ids`` from all their pending parts with the sealing composite (``run_id``:
    the cycle's, or the seal-at-end step's; ``fence``: the root's lease, checked before publishing)."""
    root = config.storage.root
    parts = window_parts(root, sid, window_ids)  # only these windows' folders, not the whole history
    paths = [info.path for wid in window_ids for info in parts.get(wid, [])]
    sources = {}
    for wid in window_ids:
        for info in parts.get(wid, []):
            uri = source_uri(info.range.topic, info.range.partition)
            sources.setdefault(uri, {"uri": uri, "topic": info.range.topic, "partition": info.range.partition})
    spec = seal_spec(config, schema_text, schema_version, run_id, fingerprint=current_transform(root),
                     sources=sources, fence=fence)
    pipeline = beam.Pipeline(options=options)
    chunks = pipeline | "ReadParts" >> ReadPendingChunks(paths, config.window.size_s, feature_types(schema))
    # Dead letters written at ingest count toward their windows; they are not written again.
    ingest_dead = ingest_dead_letters(root, sid, window_ids)
    counted = pipeline | "IngestDeadLetters" >> beam.Create(ingest_dead, reshuffle=False)
    sealed = seal_chunks(chunks, counted, spec)
    _ = sealed.duplicates | "WriteDuplicates" >> WriteDeadLetters(root, run_id)
    _ = sealed.windows | "WindowSummaries" >> WriteRunOutputs(root, run_id, WINDOWS_OUTPUT, lambda w: w["window_id"])
    with collector.tuned():
        result = pipeline.run()
        result.wait_until_finish()
    metrics.record_beam_counters(result, "stream_seal", "pending")
    storage.delete_tree(layout.run_scratch_dir(root, run_id))
    storage.delete_tree(transform_scratch(config, run_id))  # elsewhere when the root is on S3
    return sorted(read_run_outputs(root, run_id, WINDOWS_OUTPUT), key=lambda w: w["window_id"])


def seal_run_id(plan: CyclePlan, sid: str) -> str:
    """Deterministic per cycle (a replay overwrites the same run record and dead-letter file)."""
    return f"{plan.date}T000000Z-stream-{sid}-c{plan.cycle:08d}"


# --------------------------------------------------------------------------- one cycle


@dataclass
class CycleResult:
    cycle: int
    replayed: bool
    records: int
    parts: int
    dead_letters: int
    late_records: int
    watermark_ms: Optional[int]
    sealed: list
    commit_error: Optional[str] = None
    seconds: dict = None
    """wall time per phase: plan, schema, ingest, seal, checkpoint, commit"""

    @property
    def idle(self) -> bool:
        return self.records == 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


class StreamRunner:
    """Runs cycles of one Kafka source into one storage root (the lock must be held)."""

    def __init__(self, config, options, lock: Optional[StorageLock] = None,
                 max_records_per_cycle: int = DEFAULT_MAX_RECORDS_PER_CYCLE, clock=time.time):
        if config.source.kafka is None or not config.source.kafka.topic:
            raise ConfigError("ctpipe stream needs source.kafka with bootstrap_servers and topic in the config "
                              "(see examples/ctpipe.yaml)")
        from transforms.kafka.client import client_kwargs

        self.config = config
        self.options = options
        self.kafka = config.source.kafka
        self.kwargs = client_kwargs(self.kafka)
        self.store = CheckpointStore(config.storage.root, self.kafka.topic)
        self.lock = lock
        """The root's lease for the cycle being run (run_stream takes it per cycle)."""
        self.max_records_per_cycle = max_records_per_cycle
        self._clock = clock

    def _check_lock(self, where: str = "between the phases of a cycle") -> None:
        """A safe point: stop on SIGTERM, refuse to go on without a valid lease."""
        stop_if_terminating(where)
        if self.lock is not None:
            self.lock.check()

    def check_topic(self, checkpoint: Checkpoint) -> Optional[str]:
        """The topic's id now; InputError when it is not the one the checkpoint's offsets belong to."""
        now = topic_id(self.kwargs, self.kafka.topic)
        if checkpoint.topic_id and now and now != checkpoint.topic_id:
            raise InputError(
                f"Kafka topic {self.kafka.topic!r} was deleted and recreated: its id is {now}, the checkpoint "
                f"{self.store.path} holds offsets of topic id {checkpoint.topic_id}; the new topic's offsets "
                "restart, so reading on from this checkpoint would skip or misplace records. Nothing was "
                "read. Seal the new topic into another storage root (or restore the old topic); the windows "
                "sealed here stay as they are")
        return now or checkpoint.topic_id

    def _fence(self):
        return None if self.lock is None else self.lock.fence()

    def end_offsets(self) -> dict:
        """The topic's end offsets now (what ``--until-idle`` records at its start)."""
        return end_offsets(self.kwargs, self.kafka.topic)

    def caught_up(self, target: dict) -> bool:
        """True once the checkpoint has reached ``target`` (partition -> offset) everywhere."""
        offsets = self.store.load().offsets
        return all(offsets.get(p, -1) >= o for p, o in target.items())

    def plan(self, checkpoint: Checkpoint, until: Optional[dict] = None) -> tuple[CyclePlan, bool]:
        if checkpoint.in_flight:
            return CyclePlan.from_json(checkpoint.in_flight), True
        end = end_offsets(self.kwargs, self.kafka.topic)
        begin = beginning_offsets(self.kwargs, self.kafka.topic)
        if until is not None:
            end = cap_end_offsets(end, until, checkpoint.offsets, begin)
        now = self._clock()
        date = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).strftime("%Y%m%d")
        plan = plan_cycle(checkpoint, begin, end, self.kafka.topic, self.kafka.max_records_per_split,
                          self.max_records_per_cycle, date, int(now * 1000))
        for partition, offset in end.items():
            metrics.KAFKA_LAG.labels(topic=self.kafka.topic, partition=str(partition)).set(
                offset - checkpoint.offsets.get(partition, begin.get(partition, 0)))
        return plan, False

    def run_cycle(self, until: Optional[dict] = None) -> CycleResult:
        """One cycle; ``until`` (partition -> offset) caps what it plans to read."""
        try:
            return self._run_cycle(until)
        except CtpipeError:
            raise
        except Exception as exc:
            kafka = find_in_chain(exc, KafkaSourceError)
            if kafka is not None:
                raise InputError(str(kafka)) from exc
            raise

    def _run_cycle(self, until: Optional[dict]) -> CycleResult:
        config, root = self.config, self.config.storage.root
        sid = self.store.source_id
        seconds = {}
        mark = [time.monotonic()]

        def lap(name):
            now = time.monotonic()
            seconds[name] = round(now - mark[0], 3)
            mark[0] = now

        self._check_lock("before planning a cycle")
        checkpoint = self.store.load()
        checkpoint = checkpoint.replace(topic_id=self.check_topic(checkpoint))
        plan, replayed = self.plan(checkpoint, until)
        if not plan.ranges:
            lap("plan")
            return CycleResult(checkpoint.cycle, False, 0, 0, 0, 0, checkpoint.watermark_ms, [], seconds=seconds)
        if not replayed:
            self.store.save(checkpoint.replace(in_flight=plan.to_json()), fence=self.lock)
        lap("plan")
        with metrics.timed("stream_cycle"):
            if schema_store.load(root) is None:
                infer_schema_from_ranges(config, plan, self.kwargs, self.options, fence=self.lock)
            schema, schema_text, schema_version = schema_store.load(root)
            lap("schema")
            self._check_lock(f"cycle {plan.cycle} before its ingest (the plan is in the checkpoint: a rerun replays it)")
            ingest = run_ingest(config, plan, sid, self.kwargs, self.options, schema,
                                checkpoint.parts_collected_before_ms)
            lap("ingest")
            newest = merge_newest(checkpoint.max_event_time_ms, ingest["newest"])
            now = self._clock()
            # When each partition last delivered records; a partition with data but no entry yet
            # (older checkpoint) starts its idle clock now.
            records_at = {p: checkpoint.last_records_at.get(p, now) for p in newest}
            records_at.update({p: now for p in ingest["newest"]})
            idle = idle_partitions(records_at, now, self.kafka.idle_timeout_s())
            watermark = compute_watermark(newest, config.window.lateness_s, plan.watermark_before_ms,
                                          frozenset(idle), frozenset(plan.ends))
            touched = {p["window_id"] for p in ingest["parts"] if not p["late_side_output"]}
            pending = list(list_parts(root, sid))
            to_seal = windows_to_seal(pending, touched, config.window.size_s, plan.watermark_before_ms, watermark)
            sealed = []
            if to_seal:
                self._check_lock(f"cycle {plan.cycle} before sealing (a rerun replays the cycle from its plan)")
                sealed = run_seal(config, self.options, sid, to_seal, seal_run_id(plan, sid), schema, schema_text,
                                  schema_version, fence=self._fence())
            lap("seal")
            late = int(ingest["counters"].get("late_records", 0))
            late_counts = dict(checkpoint.late_records)
            if late:
                late_counts[config.window.late_data] = late_counts.get(config.window.late_data, 0) + late
            self._check_lock(f"cycle {plan.cycle} before its checkpoint (a rerun replays the cycle from its plan)")
            done = checkpoint.replace(offsets={**checkpoint.offsets, **plan.ends}, max_event_time_ms=newest,
                                      watermark_ms=watermark, cycle=plan.cycle, in_flight=None,
                                      late_records=late_counts, last_records_at=records_at)
            self.store.save(done, fence=self.lock)
            lap("checkpoint")
        for window in sealed:
            if window["written"]:
                metrics.WINDOWS_SEALED.labels(verdict=window["verdict"]).inc()
        # Data-quality and drift gauges of the windows this cycle sealed, as a backfill exports them.
        written = [w["window_id"] for w in sealed if w["written"]]
        if written:
            quality.export_quality_metrics(root, written)
        if watermark is not None:
            metrics.WATERMARK.labels(source=sid).set(watermark / 1000)
        commit_error = None
        try:
            commit_group_offsets(self.kwargs, self.kafka.group_id, self.kafka.topic, done.offsets)
        except KafkaSourceError as exc:  # lag visibility only: the checkpoint already holds the truth
            commit_error = str(exc)
            print(f"ctpipe stream: warning: {exc}; the next cycle commits again", file=sys.stderr)
        lap("commit")
        result = CycleResult(plan.cycle, replayed, plan.records, len(ingest["parts"]), int(ingest["dead"] or 0),
                             late, watermark, sealed, commit_error, seconds)
        storage.write_json_atomic(layout.run_record_path(root, seal_run_id(plan, sid)), {
            "run_id": seal_run_id(plan, sid), "kind": "stream", "code_version": code_version(),
            "plan": plan.to_json(), "result": result.to_json(), "finished_at": round(self._clock(), 3)})
        metrics.LAST_SUCCESS.labels(job="stream").set_to_current_time()
        return result


    def seal_open_windows(self) -> dict:
        """Seal every window that still has pending parts and whose end the watermark has not
        passed, as it is, then move the watermark to the end of the newest one sealed.

        For the end of a bounded run (``--seal-at-end``): the windows become visible to training
        now. Moving the watermark makes later records for them late, so the existing rule
        applies to them (``window.late_data``: ``new_version`` reseals the window from all its
        parts as v<N+1>, ``side_output`` writes them under <root>/late/). Sealing is idempotent,
        so a crash before the checkpoint is saved and a rerun seal the same content again (a no-op)."""
        config, root = self.config, self.config.storage.root
        sid = self.store.source_id
        self._check_lock()
        checkpoint = self.store.load()
        if checkpoint.in_flight:
            raise StorageError(f"{self.store.path} holds a cycle in flight; run `ctpipe stream` to finish it "
                               "before sealing the open windows")
        watermark = checkpoint.watermark_ms
        open_ids = [wid for wid in sorted(list_parts(root, sid))
                    if watermark is None or window_end_ms(wid, config.window.size_s) > watermark]
        if not open_ids:
            return {"cycle": checkpoint.cycle, "sealed": [], "watermark_ms": watermark}
        schema, schema_text, schema_version = schema_store.load(root)
        now = self._clock()
        date = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).strftime("%Y%m%d")
        run_id = f"{date}T000000Z-stream-{sid}-c{checkpoint.cycle:08d}-seal-at-end"
        sealed = run_seal(config, self.options, sid, open_ids, run_id, schema, schema_text, schema_version,
                          fence=self._fence())
        newest_end = max(window_end_ms(wid, config.window.size_s) for wid in open_ids)
        watermark = newest_end if watermark is None else max(watermark, newest_end)
        self._check_lock("before the checkpoint of the seal at the end")
        self.store.save(checkpoint.replace(watermark_ms=watermark), fence=self.lock)
        for window in sealed:
            if window["written"]:
                metrics.WINDOWS_SEALED.labels(verdict=window["verdict"]).inc()
        metrics.WATERMARK.labels(source=sid).set(watermark / 1000)
        outcome = {"cycle": checkpoint.cycle, "sealed": sealed, "watermark_ms": watermark}
        storage.write_json_atomic(layout.run_record_path(root, run_id), {
            "run_id": run_id, "kind": "stream-seal-at-end", "code_version": code_version(),
            "windows": open_ids, "result": outcome, "finished_at": round(self._clock(), 3)})
        return outcome


# --------------------------------------------------------------------------- command


def run_stream(config, options, cycles: Optional[int] = None, until_idle: bool = False,
               interval_s: Optional[float] = None, max_records_per_cycle: int = DEFAULT_MAX_RECORDS_PER_CYCLE,
               on_cycle=None, lock_timeout_s: float = 0.0, seal_at_end: bool = False, on_seal=None) -> list:
    """Run cycles, each under the storage root's lease (pipeline/lease.py); returns the CycleResults.

    The lease is taken per cycle and released between cycles, so a backfill, a train's push or a
    window release on the same root runs between two cycles instead of waiting for the stream to
    exit; a second stream on the same root alternates cycles with this one (each cycle starts from
    the checkpoint under the lease, so nothing is read twice). ``lock_timeout_s``: how long each
    cycle waits for the lease. SIGTERM abandons the cycle at its next phase boundary.

    ``until_idle``: record the topic's end offsets first, run cycles that read at most up to
    them, and stop once the checkpoint reached them (or a cycle found nothing to read, e.g. a
    partition that vanished): under continuous production the run still ends. ``seal_at_end``
    (bounded runs only): then seal the windows still open (``StreamRunner.seal_open_windows``,
    under the lease) and pass its outcome to ``on_seal``."""
    if config.source.kafka is None:
        raise ConfigError("ctpipe stream needs a source.kafka section in the config (bootstrap_servers, topic)")
    if cycles is not None and cycles < 1:
        raise ConfigError(f"--cycles must be >= 1, not {cycles}")
    if interval_s is not None and interval_s <= 0:
        raise ConfigError(f"--interval must be > 0 seconds, not {interval_s}")
    if seal_at_end and interval_s is not None:
        raise ConfigError("--seal-at-end ends a bounded run (--until-idle or --cycles N); a run with --interval "
                          "never ends, so it has no end to seal at")
    storage.makedirs(config.storage.root)
    results = []
    runner = StreamRunner(config, options, None, max_records_per_cycle)
    if interval_s is not None:
        metrics.serve(config.metrics.port, config.metrics.bind)
    with handle_sigterm("ctpipe stream", graceful=True):
        target = runner.end_offsets() if until_idle else None
        _run_cycles(config, runner, results, cycles, until_idle, interval_s, on_cycle, lock_timeout_s, target)
        if seal_at_end:
            stop_if_terminating("before sealing the open windows")
            with root_lease(config.storage.root, "stream", lock_timeout_s, graceful=True) as lock:
                runner.lock = lock
                try:
                    outcome = runner.seal_open_windows()
                finally:
                    runner.lock = None
            if on_seal is not None:
                on_seal(outcome)
    metrics.push(config.metrics.pushgateway, "stream")
    return results


def _run_cycles(config, runner, results, cycles, until_idle, interval_s, on_cycle, lock_timeout_s,
                target: Optional[dict]) -> None:
    """The loop of run_stream: one lease per cycle; appends each CycleResult to ``results``."""
    done = 0
    while True:
        started = time.monotonic()
        stop_if_terminating(f"before cycle {done + 1}")
        with root_lease(config.storage.root, "stream", lock_timeout_s, graceful=True) as lock:
            runner.lock = lock
            try:
                result = runner.run_cycle(until=target)
                caught_up = until_idle and (result.idle or runner.caught_up(target))
            finally:
                runner.lock = None
        results.append(result)
        done += 1
        if on_cycle is not None:
            on_cycle(result)
        if caught_up:
            break
        if not until_idle and interval_s is None and done >= (cycles or 1):
            break
        if interval_s is not None:
            remaining = interval_s - (time.monotonic() - started)
            if remaining > 0:
                wait_unless_terminating(remaining)  # the schedule itself, not a race workaround
