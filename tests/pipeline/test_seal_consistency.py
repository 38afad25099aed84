"""The same events through the three graphs that seal windows give the same windows.

backfill (files, DirectRunner), ``ctpipe stream`` (a real broker, bounded cycles) and the
unbounded graph (TestStream, the streaming DirectRunner) all seal through transforms/seal.py.
Fed the same events, with the same schema and transform, they must agree on verdicts, reasons,
quality numbers, dead-letter counts and the bytes of every file in the window, so manifests are
equal apart from source coverage (and timeliness, which only Kafka's ingest times give).

All three share the composite, so agreement alone cannot catch a bug they share: the record
counts and verdicts are also pinned to what the test generated.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from core import schema_store, window_store
from core.records import SourceRecord
from core.transform_store import current_transform
from pipeline import synthetic
from pipeline.backfill import run_backfill
from pipeline.config import config_from_dict
from pipeline.stream import run_stream
from pipeline.streaming_graph import build_streaming_graph
from transforms.kafka.produce import produce

pytestmark = pytest.mark.slow

START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
HOURS = 3
ROWS = 150
WINDOW = {"size": "1h", "allowed_lateness": "0s"}


@pytest.fixture(scope="module")
def lines():
    """(line bytes, event or None) in event-time order, with malformed lines, out-of-range values
    and one duplicated id in the second hour."""
    out = list(synthetic.generate(START, HOURS, ROWS, seed=3, malformed_per_hour=2, out_of_range_per_hour=1))
    second_hour = [item for item in out if item[1] is not None and item[1]["ts"].startswith("2026-11-27T01")]
    out.insert(out.index(second_hour[10]) + 1, second_hour[3])
    return out


def _copy_published(src_root: str, dst_root: str) -> None:
    for part in ("schema", "transforms"):
        shutil.copytree(f"{src_root}/{part}", f"{dst_root}/{part}")


def _comparable(window) -> dict:
    manifest = dict(window.manifest)
    manifest.pop("sources")
    # where each record and dead letter came from differs by graph (files vs Kafka partitions)
    manifest.pop("dead_letters_by_source")
    manifest["files"] = [f for f in manifest["files"] if f["kind"] != "provenance"]
    quality = dict(manifest.pop("quality"))
    quality.pop("timeliness", None)
    return {"manifest": manifest, "quality": quality}


def test_backfill_stream_and_unbounded_seal_the_same_windows(tmp_path, lines, direct_options, kafka_broker,
                                                          kafka_topic):
    data = tmp_path / "data"
    data.mkdir()
    (data / "events-0000.jsonl").write_bytes(b"".join(line + b"\n" for line, _ev in lines))

    # 1. backfill: infers the schema, analyzes and publishes the transform
    backfill_root = str(tmp_path / "backfill")
    config = config_from_dict({"storage": {"root": backfill_root}, "window": WINDOW,
                               "source": {"files": {"uri": str(data / "*.jsonl")}}})
    run_backfill(config, direct_options, None, None)
    fingerprint = current_transform(backfill_root)
    backfilled = {w.window_id: w for w in window_store.list_sealed(backfill_root)}
    assert sorted(backfilled) == ["20261127T0000Z", "20261127T0100Z", "20261127T0200Z"]
    assert backfilled["20261127T0100Z"].manifest["quality"]["dead_letter_reasons"].get("duplicate_id") == 1

    # 2. ctpipe stream on a root holding only that schema and transform
    stream_root = str(tmp_path / "stream")
    _copy_published(backfill_root, stream_root)
    produce(kafka_broker.client_kwargs, kafka_topic, ((None, line) for line, _ev in lines), partitions=1)
    stream_config = config_from_dict({
        "storage": {"root": stream_root}, "window": WINDOW,
        "source": {"kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic}}})
    run_stream(stream_config, direct_options, until_idle=True)
    streamed = {w.window_id: w for w in window_store.list_sealed(stream_root)}
    # the watermark (newest event time, no lateness) passed the first two windows only
    assert sorted(streamed) == ["20261127T0000Z", "20261127T0100Z"]

    # 3. the unbounded graph under TestStream, the watermark advancing hour by hour
    unbounded_root = str(tmp_path / "unbounded")
    _copy_published(backfill_root, unbounded_root)
    _schema, schema_text, schema_version = schema_store.load(unbounded_root)
    stream = TestStream().advance_watermark_to(START.timestamp())
    for hour in range(HOURS):
        hour_start = START.timestamp() + hour * 3600
        batch = [TimestampedValue(SourceRecord("kafka://t/0", str(i), line, None, None), hour_start)
                 for i, (line, ev) in enumerate(lines) if _hour_of(line, ev) == hour]
        stream = stream.add_elements(batch).advance_watermark_to(hour_start + 3600)
    stream = stream.advance_watermark_to_infinity()
    unbounded_config = config_from_dict({"storage": {"root": unbounded_root}, "window": WINDOW,
                                         "source": {"files": {"uri": str(data / "*.jsonl")}}})
    with BeamTestPipeline(options=PipelineOptions(["--streaming"])) as p:
        build_streaming_graph(p, unbounded_config, schema_text, schema_version, fingerprint, source=stream)
    unbounded = {w.window_id: w for w in window_store.list_sealed(unbounded_root)}
    assert sorted(unbounded) == sorted(backfilled)

    for wid, window in backfilled.items():
        expected = _comparable(window)
        assert _comparable(unbounded[wid]) == expected, f"unbounded graph sealed {wid} differently"
        if wid in streamed:
            assert _comparable(streamed[wid]) == expected, f"ctpipe stream sealed {wid} differently"
    # The shared composite could be wrong the same way in all three graphs: pin the numbers to
    # the generated input as well.
    for hour, wid in enumerate(sorted(backfilled)):
        manifest = backfilled[wid].manifest
        events_in_hour = {ev["id"] for line, ev in lines if ev is not None and _hour_of(line, ev) == hour}
        assert manifest["record_count"] == len(events_in_hour), wid
        assert manifest["validation"]["verdict"] == "PASS", manifest["validation"]["reasons"]
    assert backfilled["20261127T0000Z"].manifest["quality"]["drift"]["against"] is None
    assert backfilled["20261127T0100Z"].manifest["quality"]["drift"]["against"] == "20261127T0000Z"


def _hour_of(line: bytes, ev) -> int:
    """Event-time hour of a line; lines without a readable time go first (early is never late)."""
    try:
        text = ev["ts"] if ev is not None else json.loads(line)["ts"]
        return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).hour
    except (ValueError, KeyError, TypeError):
        return 0
