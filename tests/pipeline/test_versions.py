"""A new version of a window holds every record of the previous one plus the new ones.

Reproduced before: ``ctpipe backfill --input`` over one late file sealed the window's next
version from that file alone (2,000 records -> 1), and a stream cycle with late data for a window
a backfill had sealed resealed it from the stream's records only. Checked independently of the
manifests: ids are read back from the raw TFRecords with plain tf.data and the stored schema.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest

from core import window_store
from core.transform_store import current_transform
from pipeline import synthetic
from pipeline.backfill import run_backfill
from pipeline.config import config_from_dict
from pipeline.stream import run_stream
from tests._stores import read_ids_with_schema
from transforms.kafka.produce import produce

pytestmark = pytest.mark.slow

START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
W0, W1 = "20261127T0000Z", "20261127T0100Z"


def _event(ev_id: str, minute: int, hour: int = 1) -> bytes:
    return json.dumps({"id": ev_id, "ts": f"2026-11-27T{hour:02d}:{minute:02d}:00Z", "device_id": "dev-001",
                       "firmware": "v2", "temperature": 21.5, "vibration": 0.4, "humidity": 40.0,
                       "label": 1}).encode()


def _ids_by_window(root: str) -> dict:
    """{window_id: sorted ids} read back from each window's raw TFRecords with plain tf.data."""
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils

    from core import schema_store

    schema, _text, _v = schema_store.load(root)
    spec = {"id": schema_utils.schema_as_feature_spec(schema).feature_spec["id"]}
    out = {}
    for window in window_store.list_sealed(root):
        ds = tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP")
        values = [example["id"].numpy() for example in ds.map(lambda r: tf.io.parse_single_example(r, spec))]
        out[window.window_id] = sorted((v[0] if v.shape else v).decode() for v in values)
    return out


@pytest.fixture
def store(tmp_path, direct_options):
    """Two hours sealed by a first backfill (with malformed lines counted as dead letters)."""
    events_dir = tmp_path / "events"
    generated = synthetic.write_jsonl(str(events_dir), synthetic.generate(START, 2, 120, seed=5, malformed_per_hour=2),
                                      rows_per_hour=122)
    config = config_from_dict({"storage": {"root": str(tmp_path / "store")},
                               "source": {"files": {"uri": str(events_dir / "*.jsonl")}}})
    run_backfill(config, direct_options, None, None)
    return config, generated, tmp_path


def test_input_over_one_late_file_keeps_the_window_and_adds_the_new_records(store, direct_options):
    config, generated, base = store
    root = config.storage.root
    v1 = window_store.latest_sealed(root, W1)
    before = _ids_by_window(root)
    assert sorted(before[W0] + before[W1]) == sorted(generated.valid_ids)
    late_dir = base / "late"
    late_dir.mkdir()
    existing = before[W1][5]
    (late_dir / "late.jsonl").write_bytes(b"\n".join([
        _event("late-1", 30), _event("late-2", 31),
        _event(existing, 32),                                            # an id the window already holds
        b'{"id": "bad-1", "ts": "2026-11-27T01:33:00Z", "temperature": "hot"',  # malformed (no event time)
        json.dumps({"id": "bad-2", "ts": "2026-11-27T01:34:00Z", "device_id": "dev-001", "firmware": "v2",
                    "temperature": "not a number", "vibration": 0.4, "humidity": 40.0, "label": 1}).encode(),
    ]) + b"\n")
    late = config.replace(source=config.source.replace(files=config.source.files.replace(
        uri=str(late_dir / "*.jsonl"))))

    result = run_backfill(late, direct_options, None, None)

    written = {w["window_id"]: w for w in result.record["windows"] if w["written"]}
    assert set(written) == {W1}, "only the window that received records gets a new version"
    after = _ids_by_window(root)
    assert after[W0] == before[W0]
    assert after[W1] == sorted(before[W1] + ["late-1", "late-2"])
    v2 = window_store.latest_sealed(root, W1)
    assert v2.version == 2 and v2.manifest["record_count"] == len(after[W1])
    # dead letters: the first run's (carried, per source) + the type mismatch + the duplicate id;
    # the malformed line has no readable event time, so it counts toward no window
    reasons = v2.manifest["quality"]["dead_letter_reasons"]
    assert v2.manifest["dead_letters"] == v1.manifest["dead_letters"] + 2
    assert reasons.get("duplicate_id") == 1 and reasons.get("type_mismatch", 0) >= 1
    late_uri = str(late_dir / "late.jsonl")
    assert v2.manifest["dead_letters_by_source"][late_uri] == {"duplicate_id": 1, "type_mismatch": 1}
    assert {s["uri"] for s in v2.manifest["sources"]} >= {late_uri}
    # the published transform was applied, not analyzed again
    assert v2.manifest["transform_fingerprint"] == v1.manifest["transform_fingerprint"] == current_transform(root)

    # the same late run again, and then the original full input again: nothing changes
    again = run_backfill(late, direct_options, None, None)
    assert not any(w["written"] for w in again.record["windows"])
    full = run_backfill(config, direct_options, None, None)
    assert not any(w["written"] for w in full.record["windows"]), full.record["windows"]
    assert _ids_by_window(root) == after
    # and a backfill of just that window (a whole-window range) holds everything too
    one = run_backfill(config, direct_options, int(START.timestamp() * 1000) + 3600_000,
                       int(START.timestamp() * 1000) + 7200_000)
    assert [w["window_id"] for w in one.record["windows"]] == [W1] and not one.record["windows"][0]["written"]


def test_analyze_transform_publishes_a_new_transform(store, direct_options):
    config, _generated, _base = store
    root = config.storage.root
    first = current_transform(root)
    result = run_backfill(config, direct_options, None, None, analyze_transform=True)
    assert result.record["transform"]["analyzed"] is True
    # same windows, same preprocessing_fn: the same analysis gives the same fingerprint (no new version)
    assert current_transform(root) == first
    assert not any(w["written"] for w in result.record["windows"])


def test_stream_late_data_keeps_the_records_a_backfill_sealed(store, direct_options, kafka_broker, kafka_topic):
    config, generated, _base = store
    root = config.storage.root
    before = _ids_by_window(root)
    # the stream reads a topic with late records for W1 and newer ones that move its watermark
    messages = [(None, _event(f"s-late-{i}", 40 + i)) for i in range(3)]
    messages += [(None, _event(f"s-new-{i}", i, hour=3)) for i in range(3)]
    produce(kafka_broker.client_kwargs, kafka_topic, messages, partitions=1)
    stream_config = config_from_dict({
        "storage": {"root": root}, "window": {"size": "1h", "allowed_lateness": "0s"},
        "source": {"kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic}}})
    run_stream(stream_config, direct_options, until_idle=True)
    after = _ids_by_window(root)
    assert after[W1] == sorted(before[W1] + [f"s-late-{i}" for i in range(3)])
    assert after[W0] == before[W0]
    v1, v2 = (window_store.list_sealed(root, latest_only=False)[i] for i in (1, 2))
    assert (v1.window_id, v1.version, v2.window_id, v2.version) == (W1, 1, W1, 2)
    # the backfill's dead letters (files) are carried, the stream's partition adds none
    assert v2.manifest["dead_letters"] == v1.manifest["dead_letters"]
    assert set(v2.manifest["dead_letters_by_source"]) == set(v1.manifest["dead_letters_by_source"])
    assert sorted(read_ids_with_schema(root)) == sorted(generated.valid_ids + [f"s-late-{i}" for i in range(3)])


def test_a_stream_replanned_from_scratch_duplicates_nothing(tmp_path, direct_options, kafka_broker, kafka_topic):
    """The documented recovery for a lost or unusable checkpoint is to move it away: the next run
    plans from the topic's beginning with other ranges (so other part names) over records already
    in parts and windows. Before, every record then became a duplicate_id dead letter and the
    windows resealed QUARANTINED; now the windows stay exactly as they were."""
    import os

    from pipeline.checkpoint import CheckpointStore

    messages = [(None, _event(f"e-{h}-{m}", m, hour=h)) for h in (0, 1) for m in range(0, 60, 2)]
    messages += [(None, b"{not json"), (None, json.dumps({"id": "bad-t", "ts": "2026-11-27T01:05:00Z",
                                                             "temperature": "warm"}).encode())]
    messages += [(None, _event("e-3-0", 0, hour=3))]  # moves the watermark past the first two hours
    produce(kafka_broker.client_kwargs, kafka_topic, messages, partitions=1)

    def config(split):
        return config_from_dict({
            "storage": {"root": str(tmp_path / "store")}, "window": {"size": "1h", "allowed_lateness": "0s"},
            "source": {"kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic,
                                 "max_records_per_split": split}}})

    run_stream(config(7), direct_options, until_idle=True)
    root = str(tmp_path / "store")
    before = {w.window_id: w.manifest for w in window_store.list_sealed(root, latest_only=False)}
    assert sorted(before) == [W0, W1]
    os.remove(CheckpointStore(root, kafka_topic).path)  # what the error messages tell the operator to do
    run_stream(config(11), direct_options, until_idle=True)
    after = {w.window_id: w.manifest for w in window_store.list_sealed(root, latest_only=False)}
    assert after == before, "no new version, no duplicate dead letters"
    assert all("duplicate_id" not in m["quality"]["dead_letter_reasons"] for m in after.values())
    ids = _ids_by_window(root)
    assert ids[W0] + ids[W1] == sorted(f"e-0-{m}" for m in range(0, 60, 2)) + sorted(
        f"e-1-{m}" for m in range(0, 60, 2))
