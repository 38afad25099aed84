"""The unbounded graph's windowing, lateness and write semantics with TestStream (DirectRunner).
The Java consumer settings it gives Beam's KafkaIO: tests/transforms/test_kafka_java_config.py."""
from __future__ import annotations

import datetime as dt
import json
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from core import schema_store, window_store
from core.records import SourceRecord
from core.transform_store import current_transform
from pipeline import synthetic
from pipeline.config import config_from_dict
from pipeline.streaming_graph import build_streaming_graph

pytestmark = pytest.mark.slow

T0 = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
T0_S = T0.timestamp()
H = 3600


def _event(i: int, seconds: float) -> bytes:
    ts = (T0 + dt.timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"id": f"s-{i:05d}", "ts": ts, "device_id": f"dev-{i % 7:03d}", "firmware": "v1",
                       "temperature": 55.0 + i % 10, "vibration": 1.0 + (i % 5) / 10, "humidity": 40.0,
                       "label": i % 2}).encode()


def _record(i: int, seconds: float, raw: bytes | None = None) -> TimestampedValue:
    rec = SourceRecord("kafka://ev/0", str(i), raw if raw is not None else _event(i, seconds), None, None)
    return TimestampedValue(rec, T0_S + seconds)  # arrival time; the graph re-stamps by event time


@pytest.fixture(scope="module")
def published_store(tmp_path_factory):
    """A storage root with a schema and a transform published by a small backfill (CURRENT set)."""
    from pipeline.backfill import run_backfill
    from pipeline.options import pipeline_options

    base = tmp_path_factory.mktemp("streaming")
    data = base / "data"
    stats = synthetic.write_jsonl(str(data), synthetic.generate(dt.datetime(2026, 11, 26), 2, 300, malformed_per_hour=0,
                                                                out_of_range_per_hour=0), rows_per_hour=300)
    assert stats.valid == 600
    root = str(base / "store")
    config = config_from_dict({"storage": {"root": root}, "source": {"files": {"uri": str(data / "*.jsonl")}},
                               "window": {"size": "1h", "allowed_lateness": "30m"}})
    run_backfill(config, pipeline_options("runner_configs/direct.yaml"), None, None)
    assert current_transform(root) is not None
    return config


def _lateness_stream():
    return (TestStream()
            .advance_watermark_to(T0_S)
            .add_elements([_record(i, 60 * i) for i in range(20)])            # window 00:00
            .add_elements([_record(100 + i, H + 60 * i) for i in range(10)])  # window 01:00
            .add_elements([_record(900, 120, b"{not json")])                  # dead letter
            .advance_watermark_to(T0_S + H + 1)                               # 00:00 fires on time
            .add_elements([_record(200, 30 * 60)])                            # late, within lateness
            .advance_watermark_to(T0_S + 2 * H + 1)                           # 01:00 on time, 00:00 closed
            .add_elements([_record(300, 40 * 60)])                            # 00:00 past lateness
            .advance_watermark_to(T0_S + 3 * H + 1)
            .advance_watermark_to_infinity())


@pytest.mark.parametrize("policy", ["new_version", "side_output"])
def test_on_time_late_and_too_late_records_follow_the_late_data_policy(published_store, tmp_path, policy):
    import shutil

    from transforms.pending import list_parts, read_part

    root = str(tmp_path / "store")
    shutil.copytree(published_store.storage.root, root)
    config = config_from_dict({"storage": {"root": root}, "source": {"files": {"uri": "unused/*.jsonl"}},
                               "window": {"size": "1h", "allowed_lateness": "30m", "late_data": policy}})
    _schema, schema_text, schema_version = schema_store.load(root)
    fingerprint = current_transform(root)
    with BeamTestPipeline(options=PipelineOptions(["--streaming"])) as p:
        windows, dead_paths = build_streaming_graph(p, config, schema_text, schema_version, fingerprint,
                                                    source=_lateness_stream())
        firings = [("20261127T0000Z", 1, 20, "ON_TIME"), ("20261127T0000Z", 2, 21, "LATE"),
                   ("20261127T0100Z", 1, 10, "ON_TIME")]
        if policy == "new_version":
            firings.append(("20261127T0000Z", 3, 22, "LATE"))
        assert_that(windows | beam.Map(lambda w: (w["window_id"], w["version"], w["records"], w["timing"])),
                    equal_to(firings), label="Firings")
        assert_that(dead_paths | beam.Map(os.path.basename), equal_to(["kafka-ev-0-900-bad_json.json"]),
                    label="DeadLetters")
    sealed = {(w.window_id, w.version): w for w in window_store.list_sealed(root, latest_only=False)
              if w.window_id.startswith("20261127")}
    v2 = sealed[("20261127T0000Z", 2)].manifest
    assert v2["record_count"] == 21 and v2["supersedes"] == 1 and v2["transform_fingerprint"] == fingerprint
    assert "s-00200" in _raw_ids(sealed[("20261127T0000Z", 2)])
    late = {wid: sorted(e.id for info in parts for e in read_part(info.path))
            for wid, parts in list_parts(root, "kafka-ev", late=True).items()}
    if policy == "new_version":
        assert sorted(sealed) == [("20261127T0000Z", 1), ("20261127T0000Z", 2), ("20261127T0000Z", 3),
                                  ("20261127T0100Z", 1)]
        ids = _raw_ids(sealed[("20261127T0000Z", 3)])
        assert sorted(ids) == sorted({*_raw_ids(sealed[("20261127T0000Z", 2)]), "s-00300"}) and len(ids) == 22
        assert late == {}
    else:
        assert sorted(sealed) == [("20261127T0000Z", 1), ("20261127T0000Z", 2), ("20261127T0100Z", 1)]
        assert "s-00300" not in _raw_ids(sealed[("20261127T0000Z", 2)])
        assert late == {"20261127T0000Z": ["s-00300"]}
        (path,) = [info.path for info in list_parts(root, "kafka-ev", late=True)["20261127T0000Z"]]
        assert os.path.basename(path) == "ev-p00000-00000000000000000300-00000000000000000301.jsonl.gz"


def test_a_replayed_firing_is_a_no_op(published_store):
    """What a runner restoring a checkpoint does: fire the same window content again."""
    config = published_store
    root = config.storage.root
    _schema, schema_text, schema_version = schema_store.load(root)
    fingerprint = current_transform(root)
    for attempt in range(2):
        stream = (TestStream()
                  .advance_watermark_to(T0_S + 5 * H)
                  .add_elements([_record(500 + i, 5 * H + 60 * i) for i in range(5)])
                  .advance_watermark_to(T0_S + 6 * H)  # the DirectRunner fires no timer on the jump to +inf
                  .advance_watermark_to_infinity())
        with BeamTestPipeline(options=PipelineOptions(["--streaming"])) as p:
            windows, _dead = build_streaming_graph(p, config, schema_text, schema_version, fingerprint, source=stream)
            assert_that(windows | beam.Map(lambda w: (w["version"], w["written"])),
                        equal_to([(1, attempt == 0)]))


def _raw_ids(window) -> list:
    import tensorflow as tf

    return [tf.train.Example.FromString(r).features.feature["id"].bytes_list.value[0].decode()
            for r in tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP").as_numpy_iterator()]


def test_apply_transform_gives_the_examples_analyze_mode_sealed(published_store):
    """TransformApplier (stream and unbounded mode) over a backfilled window's events gives the
    transformed examples the backfill (analyze mode) wrote, read back from the sealed files."""
    import glob

    import tensorflow as tf

    from core.records import Event
    from pipeline.specs import decode_spec
    from transforms.decode import decode_record
    from transforms.prepare import arrow_schema_for, prepare_window
    from transforms.preprocess import TransformApplier
    from transforms.sources import read_jsonl
    from transforms.validation import feature_types
    from transforms.window_parts import WindowParts
    from transforms.windowing import split_duplicates, window_of

    config = published_store
    root = config.storage.root
    schema, schema_text, _version = schema_store.load(root)
    types = feature_types(schema)
    sealed = window_store.latest_sealed(root, "20261126T0000Z")
    events = [e for path in sorted(glob.glob(config.source.files.uri)) for rec in read_jsonl(path)
              if isinstance(e := decode_record(rec, decode_spec(config, schema)), Event)
              and window_of(e, 3600) == "20261126T0000Z"]
    kept, _dupes = split_duplicates(events)
    batch = prepare_window(kept, types, {}, WindowParts()).batch
    applier = TransformApplier(root, current_transform(root), schema_text, arrow_schema_for(types))
    got = applier.examples(batch)
    stored = list(tf.data.TFRecordDataset(sealed.file_paths("transformed"), compression_type="GZIP")
                  .as_numpy_iterator())
    assert len(got) == len(kept) == len(stored) == sealed.manifest["record_count"]
    assert got == stored  # byte for byte, in id order
    # the part sealing writes, transformed a slice at a time (slices that do not divide the rows)
    from transforms.write_window import tfrecord_gz_bytes

    for slice_rows in (97, len(kept), len(kept) + 1):
        assert applier.tfrecord_part(batch, slice_rows) == (tfrecord_gz_bytes(got), len(kept))
    # Independently of ctpipe's code: z-scores over every analyzed window's raw values (numpy,
    # population std as tft.scale_to_z_score), labels passed through.
    import numpy as np

    def raw_column(name):
        return np.array([tf.train.Example.FromString(r).features.feature[name].float_list.value[0]
                         for w in window_store.list_sealed(root) if w.window_id.startswith("20261126")
                         for r in tf.data.TFRecordDataset(w.file_paths("raw"), compression_type="GZIP")
                         .as_numpy_iterator()], dtype=np.float64)

    examples = [tf.train.Example.FromString(e) for e in got]
    for name in ("temperature", "vibration", "humidity"):
        values = raw_column(name)
        assert len(values) == 600
        expected = [(e.features[name] - values.mean()) / values.std() for e in kept]
        actual = [ex.features.feature[f"{name}_z"].float_list.value[0] for ex in examples]
        assert actual == pytest.approx(expected, abs=1e-4), name
    assert [ex.features.feature["label"].int64_list.value[0] for ex in examples] == [e.features["label"] for e in kept]


def test_a_modified_published_transform_is_refused_before_loading(published_store, tmp_path):
    """A SavedModel is executable: a transform whose files differ from its checksums never loads."""
    import shutil

    from core.errors import IntegrityError
    from transforms.prepare import arrow_schema_for
    from transforms.preprocess import TransformApplier
    from transforms.validation import feature_types

    root = str(tmp_path / "copy")
    shutil.copytree(published_store.storage.root, root)
    schema, schema_text, _version = schema_store.load(root)
    fingerprint = current_transform(root)
    arrow = arrow_schema_for(feature_types(schema))
    TransformApplier(root, fingerprint, schema_text, arrow)  # intact: loads
    variables = os.path.join(root, "transforms", fingerprint, "transform_fn", "saved_model.pb")
    with open(variables, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(IntegrityError, match="saved_model.pb"):
        TransformApplier(root, fingerprint, schema_text, arrow)
    os.remove(variables)
    with pytest.raises(IntegrityError, match="missing"):
        TransformApplier(root, fingerprint, schema_text, arrow)
