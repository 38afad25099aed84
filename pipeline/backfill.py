"""Assembly of the backfill graph (bounded: files -> sealed windows) and its schema bootstrap.

    IngestFiles (transforms/ingest.py, one DoFn per file: read, decode, record checks, the run's
        range, chunks by window)
        -> SealWindows (transforms/seal.py: group, prepare, validate, analyze + apply the
           transform, write; the composite every graph uses)
        -> WriteRunOutputs (window summaries, back to the driver through the storage root)
    dead letters of every stage -> WriteDeadLetters (and counted toward their window)

Stages live in ``transforms``; this module only wires them and runs the pipeline.
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

import apache_beam as beam

from core import layout, schema_store, storage
from core.errors import ConfigError, InputError
from core.transform_store import current_transform
from core.version import code_version
from pipeline import collector, metrics, quality
from pipeline.config import Config
from pipeline.specs import check_transform_scratch, decode_spec, seal_spec, transform_scratch
from transforms.deadletter import WriteDeadLetters
from transforms.decode import Decode, decode_record
from transforms.ingest import IngestFiles, WindowChunks
from transforms.record_checks import check_event, record_rules
from transforms.run_outputs import WriteRunOutputs, read_run_outputs
from transforms.seal import ChunkByWindow, SealWindows, key_by_window
from transforms.sources import match_files
from transforms.validation import feature_types

WINDOWS_OUTPUT = "windows"


@dataclass(frozen=True)
class RunResult:
    run_id: str
    record: dict


def new_run_id(kind: str) -> str:
    return f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{kind}-{uuid.uuid4().hex[:6]}"


def infer_and_store_schema(config: Config, options, read_columns: Callable, described_as: str,
                           run_id: Optional[str] = None, fence=None) -> int:
    """First run on an empty store: infer the schema from the statistics of the events that
    ``read_columns(pipeline, decode_spec)`` yields as feature columns (``columns_of_records``, or
    ``transforms.ingest.IngestFiles`` with ``schema_inference.FeatureColumns``), store it as
    schema v1, return its version.
    ``described_as`` names the input in the error when nothing decodes. The statistics travel
    through the run's scratch space under the storage root."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from transforms.schema_inference import StatisticsOfColumns
    from transforms.validation import infer_schema

    own_scratch = run_id is None
    run_id = run_id or new_run_id("schema")
    scratch = layout.run_scratch_dir(config.storage.root, run_id)
    stats_path = storage.join(scratch, "schema-stats.pb")
    with beam.Pipeline(options=options) as p:
        columns = read_columns(p, decode_spec(config))
        _ = columns | "Stats" >> StatisticsOfColumns(stats_path, (config.id_field, config.event_time.field))
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    stats.ParseFromString(storage.read_bytes(stats_path))
    if not stats.datasets or stats.datasets[0].num_examples == 0:
        raise InputError(f"no decodable events in {described_as}: cannot infer a schema "
                         "(check event_time.field and id_field)")
    schema = infer_schema(stats, config.label_field, config.id_field, config.event_time.field)
    version = schema_store.save(config.storage.root, schema, fence=fence)
    if own_scratch:
        storage.delete_tree(scratch)
    return version


def columns_of_records(records, spec):
    """SourceRecords -> the feature-column chunks of the ones that decode (what
    ``infer_and_store_schema`` reads; a reader of files uses ``IngestFiles`` with
    ``FeatureColumns`` instead, one DoFn per file)."""
    from transforms.schema_inference import FeatureColumnsOf

    events, _dead = records | "Decode" >> Decode(spec)
    return events | "Columns" >> FeatureColumnsOf()


def seal_chunks(chunks, dead_to_count, spec, label: str = "Seal"):
    """(window_id, packed chunk) of events plus the dead letters that count toward their windows
    -> SealOutputs."""
    dead_chunks = (dead_to_count
                   | f"{label}KeyDead" >> beam.FlatMap(key_by_window, spec.window_size_s)
                   | f"{label}ChunkDead" >> ChunkByWindow())
    return (chunks, dead_chunks) | label >> SealWindows(spec, chunked=True)


def write_run_record(root: str, run_id: str, record: dict) -> None:
    storage.write_json_atomic(layout.run_record_path(root, run_id), record)


def check_range_is_whole_windows(start_ms: Optional[int], end_ms: Optional[int], size_s: int) -> None:
    """A backfill range must cover whole windows: a range that cuts a window would seal that
    window's next version from part of its records. Refuse it and name the aligned bounds."""
    size_ms = size_s * 1000
    for flag, value in (("--from", start_ms), ("--to", end_ms)):
        if value is not None and value % size_ms:
            down, up = layout.window_start_ms(value, size_s), layout.window_start_ms(value, size_s) + size_ms
            iso = [dt.datetime.fromtimestamp(v / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                   for v in (value, down, up)]
            raise ConfigError(f"{flag} {iso[0]} cuts a {size_s}s window; a backfill seals whole windows, so "
                              f"use {flag} {iso[1]} or {flag} {iso[2]}")


def run_backfill(config: Config, options, start_ms: Optional[int], end_ms: Optional[int],
                 analyze_transform: bool = False, lock_timeout_s: float = 0.0) -> RunResult:
    """Run one backfill over the configured files under the storage root's lease (waiting up to
    ``lock_timeout_s`` for it); returns the run record (also stored).

    Windows are transformed with the published transform (``<root>/transforms/CURRENT``), the
    one the stream applies, so windows of backfills and of the stream train together and a
    backfill never changes what the stream applies behind its back. The first run on a store
    (none published yet), or ``analyze_transform``, analyzes the transform over this run's
    windows and publishes it as CURRENT."""
    from pipeline.lease import root_lease

    check_range_is_whole_windows(start_ms, end_ms, config.window.size_s)
    storage.makedirs(config.storage.root)
    with root_lease(config.storage.root, "backfill", lock_timeout_s) as lock:
        return _run_backfill(config, options, start_ms, end_ms, lock, analyze_transform)


def _run_backfill(config: Config, options, start_ms: Optional[int], end_ms: Optional[int], lock,
                  analyze_transform: bool) -> RunResult:
    root = config.storage.root
    run_id = new_run_id("backfill")
    started = time.time()
    files = match_files(config.source.files.uri)
    paths = [p for p, _size in files]
    fmt = config.source.files.format
    limit = decode_spec(config).max_value_bytes  # a longer line is an oversize dead letter
    with metrics.timed("backfill"), collector.tuned():
        if schema_store.load(root) is None:
            from transforms.schema_inference import FeatureColumns

            sample = config.source.files.schema_sample_records
            per_file = None if sample is None else max(1, -(-sample // len(paths)))
            infer_and_store_schema(config, options,
                                   lambda p, spec: (p | "Read" >> IngestFiles(
                                       paths, fmt, limit, ((decode_record, spec),),
                                       FeatureColumns(spill=layout.run_schema_columns_dir(root, run_id)),
                                       per_file=per_file))[0],
                                   repr(config.source.files.uri), run_id, fence=lock)
            storage.delete_tree(layout.run_schema_columns_dir(root, run_id))  # read: disk back now
        schema, schema_text, schema_version = schema_store.load(root)
        sources = {p: {"uri": p, "bytes": size} for p, size in files}
        fingerprint = None if analyze_transform else current_transform(root)
        spec = seal_spec(config, schema_text, schema_version, run_id, fingerprint=fingerprint, sources=sources,
                         fence=lock.fence())
        check_transform_scratch(config, options)
        pipeline = beam.Pipeline(options=options)
        steps = ((decode_record, decode_spec(config, schema)), (check_event, record_rules(schema)))
        chunks, dead = pipeline | "Ingest" >> IngestFiles(paths, fmt, limit, steps,
                                                          WindowChunks(config.window.size_s, start_ms, end_ms,
                                                                       spill=spec.staging,
                                                                       feature_types=feature_types(schema)))
        sealed = seal_chunks(chunks, dead, spec)
        _ = ((dead, sealed.duplicates) | "AllDeadLetters" >> beam.Flatten()
             | "WriteDeadLetters" >> WriteDeadLetters(root, run_id))
        _ = sealed.windows | "WindowSummaries" >> WriteRunOutputs(root, run_id, WINDOWS_OUTPUT,
                                                                   lambda w: w["window_id"])
        result = pipeline.run()
        result.wait_until_finish()
    counters = metrics.record_beam_counters(result, "backfill", "files")
    windows = sorted(read_run_outputs(root, run_id, WINDOWS_OUTPUT), key=lambda w: w["window_id"])
    for window in windows:
        if window["written"]:
            metrics.WINDOWS_SEALED.labels(verdict=window["verdict"]).inc()
    record = {
        "run_id": run_id, "kind": "backfill", "started_at": started, "finished_at": time.time(),
        "range": {"start_ms": start_ms, "end_ms": end_ms}, "inputs": paths,
        "schema_version": schema_version, "code_version": code_version(),
        "transform": {"fingerprint": fingerprint, "analyzed": fingerprint is None},
        "counters": counters, "windows": windows,
    }
    lock.check()
    write_run_record(root, run_id, record)
    storage.delete_tree(layout.run_scratch_dir(root, run_id))
    storage.delete_tree(transform_scratch(config, run_id))  # elsewhere when the root is on S3
    quality.export_quality_metrics(root, [w["window_id"] for w in windows])
    metrics.LAST_SUCCESS.labels(job="backfill").set_to_current_time()
    return RunResult(run_id, record)
