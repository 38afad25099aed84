"""Assembly of the backfill graph (bounded: files -> sealed windows) and its schema bootstrap.

    ReadEventFiles -> Decode -> AssignWindow -> GroupByWindow -> PrepareWindow
        -> ComputeWindowStats -> ValidateWindows (schema, drift vs previous window, bad fraction)
        -> AnalyzeAndTransform (TFT over the run's range, applied to every window)
        -> WriteWindows (parts, stats, anomalies, MANIFEST last)
    dead letters of every stage -> WriteDeadLetters

Stages live in ``transforms``; this module only wires them and runs the pipeline.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Optional

import apache_beam as beam

from core import layout, schema_store, storage
from core.errors import InputError
from core.version import code_version
from pipeline import metrics, quality
from pipeline.config import Config
from transforms.deadletter import WriteDeadLetters
from transforms.decode import Decode, DecodeSpec
from transforms.prepare import PrepareWindows, arrow_schema_for
from transforms.preprocess import AnalyzeAndTransform, ApplyTransform
from transforms.record_checks import CheckRecords
from transforms.sources import ReadEventFiles, match_files
from transforms.validate_windows import ValidateWindows, ValidationSettings
from transforms.validation import ComputeWindowStats, feature_types, infer_schema
from transforms.windowing import AssignWindow, GroupByWindow


@dataclass(frozen=True)
class RunResult:
    run_id: str
    record: dict


def decode_spec(config: Config, schema=None) -> DecodeSpec:
    return DecodeSpec(event_time_field=config.event_time.field, id_field=config.id_field,
                      event_time_format=config.event_time.format,
                      feature_types=feature_types(schema) if schema is not None else {},
                      max_value_bytes=(config.source.kafka.max_message_bytes if config.source.kafka else 1_000_000))


def new_run_id(kind: str) -> str:
    return f"{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{kind}-{uuid.uuid4().hex[:6]}"


def infer_and_store_schema(config: Config, options, read_records: Callable, described_as: str) -> int:
    """First run on an empty store: infer the schema from the statistics of the records that
    ``read_records(pipeline)`` yields (SourceRecords), store it as schema v1, return its version.
    ``described_as`` names the input in the error when nothing decodes."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from transforms.schema_inference import StatisticsOfEvents

    stats_path = os.path.join(tempfile.mkdtemp(prefix="ctpipe-schema-"), "stats.pb")
    with beam.Pipeline(options=options) as p:
        events, _dead = read_records(p) | "Decode" >> Decode(decode_spec(config))
        _ = events | "Stats" >> StatisticsOfEvents(stats_path)
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    with open(stats_path, "rb") as handle:
        stats.ParseFromString(handle.read())
    if not stats.datasets or stats.datasets[0].num_examples == 0:
        raise InputError(f"no decodable events in {described_as}: cannot infer a schema "
                         "(check event_time.field and id_field)")
    schema = infer_schema(stats, config.label_field, config.id_field, config.event_time.field)
    return schema_store.save(config.storage.root, schema)


def build_window_graph(p_events, dead_inputs: list, config: Config, schema, schema_text: str, schema_version: int,
                       start_ms: Optional[int], end_ms: Optional[int], run_id: str, sources_by_uri: dict,
                       temp_dir: str, transform_fingerprint: Optional[str] = None, counted_dead=None):
    """The shared window half of the graph: events -> sealed windows (+ dead letters).

    Used by backfill (files) and stream (Kafka offset ranges). Returns the PCollection of window
    summaries. ``transform_fingerprint`` None analyzes the transform over these windows (and
    publishes it); a fingerprint applies that published transform instead (stream mode).
    """
    root = config.storage.root
    types = feature_types(schema)
    p_events, record_dead = p_events | "RecordChecks" >> CheckRecords(schema)
    dead_inputs = list(dead_inputs) + [record_dead]
    keyed, _outside = p_events | "AssignWindow" >> AssignWindow(config.window.size_s, start_ms, end_ms)
    windows, dupes = keyed | "GroupByWindow" >> GroupByWindow()
    prepared = windows | "PrepareWindow" >> PrepareWindows(types, sources_by_uri)
    batches = prepared | "Batches" >> beam.Map(lambda kv: (kv[0], kv[1].batch))
    stats = (prepared
             | "PlainBatches" >> beam.Map(lambda kv: (kv[0], kv[1].plain_batch()))
             | "Stats" >> ComputeWindowStats())
    dead_all = tuple(dead_inputs) + (dupes,) | "AllDeadLetters" >> beam.Flatten()
    _ = dead_all | "WriteDeadLetters" >> WriteDeadLetters(root, run_id)
    counts = (prepared | "RecordCounts" >> beam.Map(lambda kv: (kv[0], len(kv[1].ids))))
    settings = ValidationSettings.from_config(config, schema_text)
    # ``counted_dead``: dead letters an earlier stage already wrote (stream ingest); they count
    # toward their window's bad fraction but are not written again.
    dead_for_windows = dead_all if counted_dead is None else (
        (dead_all, counted_dead) | "DeadToCount" >> beam.Flatten())
    verdicts = stats | "Validate" >> ValidateWindows(root, settings, dead_for_windows, counts, keyed)
    digests = prepared | "Digests" >> beam.Map(lambda kv: (kv[0], kv[1].digest))
    if transform_fingerprint is None:
        transformed, fingerprint = batches | "Transform" >> AnalyzeAndTransform(
            config.transform.preprocessing_fn, schema, schema_text, arrow_schema_for(types), root, digests,
            temp_dir=temp_dir)
    else:
        transformed, fingerprint = batches | "Transform" >> ApplyTransform(
            root, transform_fingerprint, schema, arrow_schema_for(types), temp_dir=temp_dir)
    dead_per_window = verdicts | "DeadCounts" >> beam.Map(lambda kv: (kv[0], kv[1][1]))
    grouped = ({
        "raw": prepared | "RawExamples" >> beam.Map(lambda kv: (kv[0], kv[1].raw_examples)),
        "transformed": transformed,
        "stats": stats,
        "verdict": verdicts | "VerdictOnly" >> beam.Map(lambda kv: (kv[0], kv[1][0])),
        "dead": dead_per_window,
        "sources": prepared | "Sources" >> beam.Map(lambda kv: (kv[0], kv[1].sources)),
        "quality": verdicts | "Quality" >> beam.Map(lambda kv: (kv[0], kv[1][2])),
    } | "JoinWindowParts" >> beam.CoGroupByKey())
    from transforms.write_window import WriteWindows

    return grouped | "WriteWindows" >> WriteWindows(root, config.window.size_s, schema_version, code_version(),
                                                   fingerprint)


def write_run_record(root: str, run_id: str, record: dict) -> None:
    storage.write_json_atomic(layout.run_record_path(root, run_id), record)


def run_backfill(config: Config, options, start_ms: Optional[int], end_ms: Optional[int]) -> RunResult:
    """Run one backfill over the configured files; returns the run record (also stored)."""
    root = config.storage.root
    storage.makedirs(root)
    run_id = new_run_id("backfill")
    started = time.time()
    files = match_files(config.source.files.uri)
    paths = [p for p, _size in files]
    with metrics.timed("backfill"):
        if schema_store.load(root) is None:
            infer_and_store_schema(
                config, options, lambda p: p | "Read" >> ReadEventFiles(paths, config.source.files.format),
                repr(config.source.files.uri))
        schema, schema_text, schema_version = schema_store.load(root)
        sources_by_uri = {p: {"uri": p, "bytes": size} for p, size in files}
        temp_dir = tempfile.mkdtemp(prefix="ctpipe-backfill-")
        summaries_path = os.path.join(temp_dir, "summaries.json")
        pipeline = beam.Pipeline(options=options)
        records = pipeline | "ReadFiles" >> ReadEventFiles(paths, config.source.files.format)
        events, dead = records | "Decode" >> Decode(decode_spec(config, schema))
        summaries = build_window_graph(events, [dead], config, schema, schema_text, schema_version,
                                       start_ms, end_ms, run_id, sources_by_uri, temp_dir)
        _ = (summaries
             | "CollectSummaries" >> beam.combiners.ToList()
             | "SaveSummaries" >> beam.Map(_save_local_json, summaries_path))
        result = pipeline.run()
        result.wait_until_finish()
    counters = metrics.record_beam_counters(result, "backfill", "files")
    with open(summaries_path, encoding="utf-8") as handle:
        windows = sorted(json.load(handle), key=lambda w: w["window_id"])
    for window in windows:
        if window["written"]:
            metrics.WINDOWS_SEALED.labels(verdict=window["verdict"]).inc()
    record = {
        "run_id": run_id, "kind": "backfill", "started_at": started, "finished_at": time.time(),
        "range": {"start_ms": start_ms, "end_ms": end_ms}, "inputs": paths,
        "schema_version": schema_version, "code_version": code_version(),
        "counters": counters, "windows": windows,
    }
    write_run_record(root, run_id, record)
    quality.export_quality_metrics(root, [w["window_id"] for w in windows])
    metrics.LAST_SUCCESS.labels(job="backfill").set_to_current_time()
    return RunResult(run_id, record)


def _save_local_json(obj, path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(obj, handle)
