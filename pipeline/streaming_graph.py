"""Unbounded mode for streaming runners (FlinkRunner with checkpointing, Dataflow streaming).

    source (ReadFromKafka, or any PTransform yielding SourceRecords: TestStream in tests)
      -> Decode (same transform as bounded mode; dead letters -> one file per record)
      -> event-time timestamps -> FixedWindows(window.size), allowed lateness = window.allowed_lateness,
         trigger AfterWatermark(late=AfterCount(1)), ACCUMULATING
      -> GroupByKey(window id) -> SealPane: dedupe, prepare, stats, validate, apply the published
         transform, write_window (the bounded mode's writer: MANIFEST last, deterministic names)

The on-time firing seals v1 of a window; every late firing carries all records seen so far
(accumulating), so write_window seals it as v<N+1> with old + late records. A firing replayed
after a runner restores a checkpoint has the same content, and write_window makes it a no-op.
Records later than the allowed lateness are dropped by the runner's windowing: the late-data
policy of bounded mode (side output) does not exist here; Beam counts them in the runner's
``droppedDueToLateness`` metric.

What differs from bounded mode, and why:
- The transform is applied, never analyzed: TFT analyzers need a bounded pass. Publish one with
  ``ctpipe backfill`` (or a ``ctpipe stream`` cycle) first; <root>/transforms/CURRENT is used.
- Validation compares a window with the newest sealed window before it in storage (the windows of
  one firing are not validated together).
- This cannot execute on this machine: Beam's Python DirectRunner does not advance an unbounded
  source's watermark, and the Flink job server jar is unreachable (shared/ENVIRONMENT.md). The
  windowing, lateness and write semantics are tested with TestStream (tests/test_streaming_graph.py)
  and the FlinkRunner options with PipelineOptions.
"""
from __future__ import annotations

import json
from typing import Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger, window

from core import layout, storage, window_store
from core.errors import ConfigError
from core.layout import window_id
from core.records import DeadLetter, SourceRecord
from core.version import code_version
from transforms.decode import Decode, DecodeSpec
from transforms.preprocess import PASSTHROUGH
from transforms.windowing import split_duplicates

# --------------------------------------------------------------------------- runner options


def flink_options(flink_master: str, checkpointing_interval_ms: int = 60_000, parallelism: int = 2,
                  environment_type: str = "DOCKER", extra: Optional[list] = None) -> list[str]:
    """FlinkRunner flags for the unbounded job: streaming, exactly-once checkpoints every
    ``checkpointing_interval_ms`` (Beam's Flink runner commits Kafka offsets and finalizes sinks on
    checkpoints), and the SDK harness environment."""
    if checkpointing_interval_ms <= 0:
        raise ConfigError(f"checkpointing_interval must be > 0 ms for an unbounded Flink job, "
                          f"not {checkpointing_interval_ms}")
    return ["--runner=FlinkRunner", f"--flink_master={flink_master}", "--streaming",
            f"--checkpointing_interval={checkpointing_interval_ms}", f"--parallelism={parallelism}",
            f"--environment_type={environment_type}", "--save_main_session", *(extra or [])]


def dataflow_options(project: str, region: str, temp_location: str, extra: Optional[list] = None) -> list[str]:
    return ["--runner=DataflowRunner", f"--project={project}", f"--region={region}",
            f"--temp_location={temp_location}", "--streaming", "--enable_streaming_engine", *(extra or [])]


def java_consumer_config(kafka_cfg) -> dict:
    """Kafka consumer properties for the cross-language ReadFromKafka (Java client names).

    Caveat: the Java client takes SASL credentials in ``sasl.jaas.config``, which travels in the
    expansion request and the job graph; restrict access to the Flink UI / job graph accordingly.
    """
    from pipeline.kafka_client import client_kwargs

    kwargs = client_kwargs(kafka_cfg)
    out = {"bootstrap.servers": ",".join(kwargs["bootstrap_servers"]), "group.id": kafka_cfg.group_id,
           "security.protocol": kwargs["security_protocol"], "auto.offset.reset": "earliest",
           "max.partition.fetch.bytes": str(kwargs["max_partition_fetch_bytes"])}
    if "ssl_cafile" in kwargs:
        out["ssl.truststore.type"] = "PEM"
        out["ssl.truststore.location"] = kwargs["ssl_cafile"]
    if kwargs.get("ssl_check_hostname") is False:
        out["ssl.endpoint.identification.algorithm"] = ""
    if "sasl_mechanism" in kwargs:
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if kwargs["sasl_mechanism"] == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        user = kwargs["sasl_plain_username"].replace('"', '\\"')
        password = kwargs["sasl_plain_password"].replace('"', '\\"')
        out["sasl.mechanism"] = kwargs["sasl_mechanism"]
        out["sasl.jaas.config"] = f'{module} required username="{user}" password="{password}";'
    return out


class ReadKafkaUnbounded(beam.PTransform):
    """Cross-language ReadFromKafka (with metadata, CreateTime timestamps) -> SourceRecords."""

    def __init__(self, kafka_cfg, expansion_service: Optional[str] = None):
        super().__init__()
        self._cfg = kafka_cfg
        self._expansion_service = expansion_service

    def expand(self, pbegin):
        from apache_beam.io.kafka import ReadFromKafka

        return (pbegin
                | "ReadFromKafka" >> ReadFromKafka(
                    consumer_config=java_consumer_config(self._cfg), topics=[self._cfg.topic], with_metadata=True,
                    timestamp_policy=ReadFromKafka.create_time_policy, commit_offset_in_finalize=True,
                    expansion_service=self._expansion_service)
                | "ToSourceRecord" >> beam.Map(lambda r: SourceRecord(
                    f"kafka://{r.topic}/{r.partition}", str(r.offset), r.value, None, r.timestamp)))


# --------------------------------------------------------------------------- window sealing per pane


class _SealPaneDoFn(beam.DoFn):
    """(window_id, events of one firing) -> summary; seals the window's next version."""

    def __init__(self, root: str, config, schema_text: str, schema_version: int, fingerprint: str):
        self._root = root
        self._size = config.window.size_s
        self._settings_config = config
        self._schema_text = schema_text
        self._schema_version = schema_version
        self._fingerprint = fingerprint
        self._sealed = beam.metrics.Metrics.counter("ctpipe", "windows_sealed")
        self._late_panes = beam.metrics.Metrics.counter("ctpipe", "late_firings")

    def setup(self):
        import os
        import tempfile

        import tensorflow_transform as tft
        from tfx_bsl.tfxio import tensor_adapter

        from core.schema_store import schema_from_text
        from core.transform_store import transform_dir
        from transforms.prepare import arrow_schema_for
        from transforms.preprocess import tensor_adapter_config
        from transforms.validation import feature_types

        self._schema = schema_from_text(self._schema_text)
        self._types = feature_types(self._schema)
        source = transform_dir(self._root, self._fingerprint)
        local = source if storage.is_local(source) else storage.download_tree(
            source, os.path.join(tempfile.mkdtemp(prefix="ctpipe-apply-"), self._fingerprint))
        self._tft = tft.TFTransformOutput(local)
        self._layer = self._tft.transform_features_layer()
        plain = pa.schema([f for f in arrow_schema_for(self._types) if f.name not in PASSTHROUGH])
        self._adapter = tensor_adapter.TensorAdapter(tensor_adapter_config(self._schema, plain))

    def _transform(self, batch: pa.RecordBatch) -> list:
        import tensorflow as tf

        outputs = self._layer(self._adapter.ToBatchTensors(batch))
        columns = {}
        for name, tensor in outputs.items():
            if isinstance(tensor, tf.SparseTensor):
                tensor = tf.sparse.to_dense(tensor)
            columns[name] = tensor.numpy().reshape(batch.num_rows, -1)
        examples = []
        for row in range(batch.num_rows):
            example = tf.train.Example()
            for name in sorted(columns):
                values = columns[name][row]
                feature = example.features.feature[name]
                if values.dtype.kind == "f":
                    feature.float_list.value.extend(values.tolist())
                elif values.dtype.kind in "iu":
                    feature.int64_list.value.extend(values.tolist())
                else:
                    feature.bytes_list.value.extend(values.tolist())
            examples.append(example.SerializeToString(deterministic=True))
        return examples

    def process(self, element, pane=beam.DoFn.PaneInfoParam):
        from transforms.prepare import prepare_window
        from transforms.validate_windows import load_window_stats
        from transforms.validation import decide, validate_window, window_statistics, with_drift_comparators
        from transforms.write_window import WindowContent, write_window

        wid, events = element
        kept, dupes = split_duplicates(list(events))
        if not kept:
            return
        prepared = prepare_window(wid, kept, self._types, {})
        stats = window_statistics(prepared.plain_batch(), wid)
        v = self._settings_config.validation
        schema = with_drift_comparators(self._schema, v.drift_js_threshold, v.drift_linf_threshold,
                                        (self._settings_config.id_field, self._settings_config.event_time.field))
        previous = window_store.previous_sealed(self._root, wid)
        anomalies = validate_window(stats, schema, load_window_stats(previous) if previous else None)
        verdict = decide(anomalies, tuple(v.blocking_anomalies), len(dupes), len(kept) + len(dupes),
                         v.max_bad_fraction)
        transformed = self._transform(prepared.plain_batch())
        content = WindowContent(
            window_id=wid, window_size_s=self._size,
            raw_examples=tuple(ex for _id, ex in prepared.raw_examples), transformed_examples=tuple(transformed),
            stats=stats, anomalies=verdict.anomalies, verdict=verdict.verdict, reasons=verdict.reasons,
            dead_letters=len(dupes), sources=tuple(prepared.sources), schema_version=self._schema_version,
            transform_fingerprint=self._fingerprint, code_version=code_version())
        _wid, version, written = write_window(self._root, content)
        if written:
            self._sealed.inc()
        timing = pane.timing if pane is not None else None
        if timing == beam.utils.windowed_value.PaneInfoTiming.LATE:
            self._late_panes.inc()
        for dead in dupes:
            yield beam.pvalue.TaggedOutput("deadletter", dead)
        yield {"window_id": wid, "version": version, "written": written, "records": len(kept),
               "verdict": verdict.verdict, "timing": {0: "EARLY", 1: "ON_TIME", 2: "LATE", 3: "UNKNOWN"}.get(timing)}


def _write_dead_letter(dead: DeadLetter, root: str) -> str:
    """One file per dead letter, named by its source position: a replay rewrites the same name."""
    path = layout.deadletter_record_path(root, dead.source, dead.position, dead.reason)
    storage.write_bytes_atomic(path, json.dumps(dead.to_json(), sort_keys=True).encode())
    return path


def build_streaming_graph(pipeline, config, schema_text: str, schema_version: int, fingerprint: str,
                          source: Optional[beam.PTransform] = None, decode_spec: Optional[DecodeSpec] = None):
    """Assemble the unbounded graph on ``pipeline``; returns (window summaries, (decode dead-letter
    paths, duplicate-id dead-letter paths)).

    ``source`` yields SourceRecords; None reads source.kafka with the cross-language ReadFromKafka.
    ``fingerprint`` names the published transform to apply.
    """
    from core.schema_store import schema_from_text
    from pipeline.backfill import decode_spec as spec_for

    root = config.storage.root
    if source is None:
        if config.source.kafka is None:
            raise ConfigError("the unbounded graph needs source.kafka in the config")
        source = ReadKafkaUnbounded(config.source.kafka)
    spec = decode_spec or spec_for(config, schema_from_text(schema_text))
    size, lateness = config.window.size_s, config.window.lateness_s
    records = pipeline | "Source" >> source
    events, dead = records | "Decode" >> Decode(spec)
    panes = (events
             | "EventTime" >> beam.Map(lambda e: window.TimestampedValue(e, e.event_time_ms / 1000.0))
             | "FixedWindows" >> beam.WindowInto(
                 window.FixedWindows(size),
                 trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                 accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                 allowed_lateness=lateness)
             | "KeyByWindow" >> beam.Map(lambda e: (window_id(e.event_time_ms - e.event_time_ms % (size * 1000)), e))
             | "GroupByWindow" >> beam.GroupByKey())
    sealed = panes | "SealPane" >> beam.ParDo(
        _SealPaneDoFn(root, config, schema_text, schema_version, fingerprint)).with_outputs("deadletter", main="windows")
    decode_dead = dead | "WriteDecodeDeadLetters" >> beam.Map(_write_dead_letter, root)
    pane_dead = sealed.deadletter | "WriteDuplicateDeadLetters" >> beam.Map(_write_dead_letter, root)
    return sealed.windows, (decode_dead, pane_dead)


def streaming_pipeline_options(flags: list[str]) -> PipelineOptions:
    return PipelineOptions(flags)
