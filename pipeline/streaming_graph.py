"""Unbounded mode for streaming runners (FlinkRunner with checkpointing, Dataflow streaming).

    source (ReadKafkaUnbounded, or any PTransform yielding SourceRecords: TestStream in tests)
      -> Decode -> CheckRecords (the same transforms as bounded mode)
      -> event-time timestamps -> FixedWindows(window.size), allowed lateness = window.allowed_lateness,
         trigger AfterWatermark(late=AfterCount(1)), ACCUMULATING
      -> SealWindows (transforms/seal.py, the composite bounded mode uses), comparing each window
         with the nearest earlier sealed window in storage and applying the published transform
    dead letters (decode, record checks, duplicates) -> one file per record, named by its position

The on-time firing seals v1 of a window; every late firing carries all records seen so far
(accumulating), so the window writer seals it as v<N+1> with old + late records. A firing
replayed after a runner restores a checkpoint has the same content, and the writer makes it a
no-op. Records later than the allowed lateness are dropped by the runner's windowing (Beam
counts them in ``droppedDueToLateness``); the bounded mode's side_output policy does not exist
here. Dead letters with an event time are windowed with the events and count toward their
window's bad fraction and quality, as in bounded mode.

What differs from bounded mode, and why:
- The transform is applied, never analyzed: TFT analyzers need a bounded pass. Publish one with
  ``ctpipe backfill`` (or a ``ctpipe stream`` cycle) first; <root>/transforms/CURRENT is used.
- Validation compares a window with the newest sealed window before it in storage (windows of one
  firing are not validated together).
"""
from __future__ import annotations

import json
from typing import Optional

import apache_beam as beam
from apache_beam.transforms import trigger, window

from core import layout, storage
from core.errors import ConfigError
from core.records import DeadLetter
from pipeline.specs import decode_spec, seal_spec
from transforms.decode import Decode
from transforms.record_checks import CheckRecords
from transforms.seal import SealWindows, key_by_window


def _write_dead_letter(dead: DeadLetter, root: str) -> str:
    """One file per dead letter, named by its source position: a replay rewrites the same name."""
    path = layout.deadletter_record_path(root, dead.source, dead.position, dead.reason)
    storage.write_bytes_atomic(path, json.dumps(dead.to_json(), sort_keys=True).encode())
    return path


def build_streaming_graph(pipeline, config, schema_text: str, schema_version: int, fingerprint: str,
                          source: Optional[beam.PTransform] = None):
    """Assemble the unbounded graph on ``pipeline``; returns (window summaries, dead-letter paths).

    ``source`` yields SourceRecords; None reads source.kafka with the cross-language ReadFromKafka.
    ``fingerprint`` names the published transform to apply.
    """
    from core.schema_store import schema_from_text

    if not fingerprint:
        raise ConfigError("the unbounded graph applies a published transform and cannot analyze one: run "
                          "`ctpipe backfill` (or a `ctpipe stream` cycle) on this storage root first")
    if source is None:
        if config.source.kafka is None:
            raise ConfigError("the unbounded graph needs source.kafka in the config")
        from transforms.kafka.source import ReadKafkaUnbounded

        source = ReadKafkaUnbounded(config.source.kafka)
    schema = schema_from_text(schema_text)
    size, lateness = config.window.size_s, config.window.lateness_s
    spec = seal_spec(config, schema_text, schema_version, run_id="unbounded", fingerprint=fingerprint,
                     compare_within_run=False)
    records = pipeline | "Source" >> source
    decoded, decode_dead = records | "Decode" >> Decode(decode_spec(config, schema))
    events, check_dead = decoded | "RecordChecks" >> CheckRecords(schema)
    dead = (decode_dead, check_dead) | "DeadLetters" >> beam.Flatten()
    timed = ((events, dead | "WithEventTime" >> beam.Filter(lambda d: d.event_time_ms is not None))
             | "EventsAndDead" >> beam.Flatten()
             | "EventTime" >> beam.Map(lambda e: window.TimestampedValue(e, e.event_time_ms / 1000.0)))
    keyed = (timed
             | "FixedWindows" >> beam.WindowInto(
                 window.FixedWindows(size),
                 trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                 accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                 allowed_lateness=lateness)
             | "KeyByWindow" >> beam.FlatMap(key_by_window, size))
    sealed = keyed | "Seal" >> SealWindows(spec)
    duplicates = sealed.duplicates | "DuplicatesGlobal" >> beam.WindowInto(window.GlobalWindows())
    dead_paths = ((dead, duplicates)
                  | "AllDeadLetters" >> beam.Flatten()
                  | "WriteDeadLetters" >> beam.Map(_write_dead_letter, config.storage.root))
    return sealed.windows, dead_paths
