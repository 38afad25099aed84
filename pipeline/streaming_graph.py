"""Unbounded mode for streaming runners (FlinkRunner with checkpointing, Dataflow streaming).

    source (ReadKafkaUnbounded, or any PTransform yielding SourceRecords: TestStream in tests)
      -> Decode -> CheckRecords (the same transforms as bounded mode)
      -> event-time timestamps -> key by window id (window.size)
      -> WindowPanes (transforms/panes.py): per window an ON_TIME pane once the watermark passes its
         end, a LATE pane (all records so far) for each record within window.allowed_lateness, and
         the records that arrive after that ("too late")
      -> SealWindows (transforms/seal.py, the composite bounded mode uses, fed the panes), comparing
         each window with the nearest earlier sealed window in storage and applying the published
         transform
    too-late records -> window.late_data: ``new_version``: a pane of them (one per window and
         watermark advance), sealed as v<N+1> (the previous version's records plus them); ``side_output``: one part file per record under
         <root>/late/<source_id>/<window_id>/, named and encoded as ctpipe stream's late parts
         (transforms/pending.py), so a replay rewrites the same file
    dead letters (decode, record checks, duplicates) -> one file per record, named by its position

The on-time pane seals v1 of a window; every late pane carries all records seen so far, so the
window writer seals it as v<N+1> with old + late records. A pane replayed after a runner restores
a checkpoint has the same content, and the writer makes it a no-op. No record is dropped for its
lateness (transforms/panes.py says why Beam's windowed GroupByKey is not used for this). Dead
letters with an event time go through the panes with the events and count toward their window's
bad fraction and quality, as in bounded mode; too late, they still count under new_version, and
under side_output only their dead-letter file is written.

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
from apache_beam import typehints
from apache_beam.transforms import window

from core import layout, storage
from core.errors import ConfigError
from core.records import DeadLetter, Event
from pipeline.checkpoint import source_id
from pipeline.specs import decode_spec, seal_spec
from transforms.decode import Decode
from transforms.kafka.source import OffsetRange
from transforms.panes import TOO_LATE, WindowPanes
from transforms.pending import SIDE_OUTPUT, encode_part, part_path
from transforms.record_checks import CheckRecords
from transforms.seal import SealWindows, key_by_window


def _write_dead_letter(dead: DeadLetter, root: str) -> str:
    """One file per dead letter, named by its source position: a replay rewrites the same name."""
    path = layout.deadletter_record_path(root, dead.source, dead.position, dead.reason)
    storage.write_bytes_atomic(path, json.dumps(dead.to_json(), sort_keys=True).encode())
    return path


def late_part_path(root: str, wid: str, event: Event) -> str:
    """Where ``side_output`` writes a too-late record read from ``kafka://<topic>/<partition>``:
    the late part of the one-record offset range [offset, offset + 1), as ``ctpipe stream`` names
    its late parts (<root>/late/<source_id>/<window_id>/<topic>-p<partition>-<offset>-<offset+1>)."""
    prefix = "kafka://"
    topic, _, partition = event.source[len(prefix):].rpartition("/")
    if not event.source.startswith(prefix) or not topic or not partition.isdigit() or not event.position.isdigit():
        raise ValueError(f"a too-late record's source must be kafka://<topic>/<partition> with an offset, not "
                         f"{event.source!r} at {event.position!r}")
    offset = int(event.position)
    return part_path(root, source_id(topic), wid, OffsetRange(topic, int(partition), offset, offset + 1),
                     late_side_output=True)


def _write_late(element, root: str):
    """Writes one too-late Event (side_output); a too-late DeadLetter is already in deadletter/."""
    wid, item = element
    if isinstance(item, Event):
        path = late_part_path(root, wid, item)
        storage.write_bytes_atomic(path, encode_part([item]))
        yield path


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
    keyed = timed | "KeyByWindow" >> beam.FlatMap(key_by_window, size).with_output_types(
        typehints.KV[str, typehints.Any])
    side_output = config.window.late_data == SIDE_OUTPUT
    fired = keyed | "Panes" >> WindowPanes(size, lateness, reseal_too_late=not side_output)
    if side_output:
        _ = fired[TOO_LATE] | "WriteLate" >> beam.FlatMap(_write_late, config.storage.root)
    sealed = fired.panes | "Seal" >> SealWindows(spec, grouped=True)
    dead_paths = ((dead, sealed.duplicates)
                  | "AllDeadLetters" >> beam.Flatten()
                  | "WriteDeadLetters" >> beam.Map(_write_dead_letter, config.storage.root))
    return sealed.windows, dead_paths
