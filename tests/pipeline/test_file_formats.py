"""CSV and Parquet backfills end to end, files written the way users write them (csv module,
pyarrow): typed features, native timestamps, dates and decimals seal like JSONL."""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tensorflow_metadata.proto.v0 import schema_pb2

from core import schema_store, window_store
from pipeline.backfill import run_backfill
from tests._stores import read_ids_with_schema

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)


def _events(n=120):
    """Two event-time hours of sensor events (the examples.sensors features)."""
    out = []
    for i in range(n):
        out.append({"id": f"ev-{i:04d}", "ts": START + dt.timedelta(minutes=i), "device_id": f"dev-{i % 7:03d}",
                    "firmware": ("v1", "v2", "v3")[i % 3], "temperature": 50.0 + (i * 37 % 200) / 10,
                    "vibration": 0.5 + (i * 13 % 100) / 100, "humidity": 30 + i % 40, "label": (i * 7 % 10) // 5})
    return out


def _backfill(tmp_path, uri, fmt):
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    config = config_from_dict({"storage": {"root": str(tmp_path / "store")},
                               "source": {"files": {"uri": uri, "format": fmt}}})
    result = run_backfill(config, pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml")), None, None)
    return config.storage.root, result


def _types(root):
    schema, _text, _version = schema_store.load(root)
    return {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature}, schema


def _dead(root):
    return [json.loads(line) for path in glob.glob(os.path.join(root, "deadletter", "*", "*.jsonl"))
            for line in open(path, encoding="utf-8")]


def test_csv_backfill_types_columns_from_their_values(tmp_path):
    events = _events()
    path = tmp_path / "events.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(events[0]))
        writer.writeheader()
        for event in events:
            writer.writerow({**event, "ts": event["ts"].isoformat().replace("+00:00", "Z")})
        handle.write("ev-bad-1,2026-11-27T00:30:00Z,dev-001,v1,hot,1.0,40,0\r\n")   # line 122
        handle.write("ev-bad-2,2026-11-27T00:31:00Z,dev-001\r\n")                   # line 123
    root, result = _backfill(tmp_path, str(path), "csv")
    types, schema = _types(root)
    assert types["temperature"] == "FLOAT" and types["vibration"] == "FLOAT" and types["humidity"] == "INT"
    assert types["label"] == "INT" and types["firmware"] == "BYTES" and types["id"] == "BYTES"
    temperature = next(f for f in schema.feature if f.name == "temperature")
    assert not temperature.HasField("domain") and not temperature.HasField("string_domain")
    assert [w.window_id for w in window_store.list_sealed(root)] == ["20261127T0000Z", "20261127T0100Z"]
    assert sorted(read_ids_with_schema(root)) == sorted(e["id"] for e in events)
    assert sorted((d["position"], d["reason"]) for d in _dead(root)) == [("122", "type_mismatch"), ("123", "bad_row")]
    assert all(w["records"] == 60 for w in result.record["windows"])


def test_parquet_backfill_reads_native_timestamps_dates_and_decimals(tmp_path):
    events = _events()
    table = pa.table({
        "id": pa.array([e["id"] for e in events], pa.large_string()),
        "ts": pa.array([e["ts"] for e in events], pa.timestamp("us", tz="UTC")),
        "day": pa.array([e["ts"].date() for e in events], pa.date32()),
        "device_id": pa.array([e["device_id"] for e in events]).dictionary_encode(),
        "firmware": pa.array([e["firmware"].encode() for e in events], pa.binary()),
        "temperature": pa.array([decimal.Decimal(f"{e['temperature']:.1f}") for e in events], pa.decimal128(6, 1)),
        "vibration": pa.array([e["vibration"] for e in events], pa.float32()),
        "humidity": pa.array([e["humidity"] for e in events], pa.int16()),
        "label": pa.array([bool(e["label"]) for e in events]),
    })
    pq.write_table(table.slice(0, 70), str(tmp_path / "part-0.parquet"))
    pq.write_table(table.slice(70), str(tmp_path / "part-1.parquet"))
    root, result = _backfill(tmp_path, str(tmp_path / "*.parquet"), "parquet")
    assert _dead(root) == []
    types, _schema = _types(root)
    assert types == {"id": "BYTES", "ts": "BYTES", "day": "BYTES", "device_id": "BYTES", "firmware": "BYTES",
                     "temperature": "FLOAT", "vibration": "FLOAT", "humidity": "INT", "label": "INT"}
    assert [w.window_id for w in window_store.list_sealed(root)] == ["20261127T0000Z", "20261127T0100Z"]
    assert sorted(read_ids_with_schema(root)) == sorted(e["id"] for e in events)
    assert [w["records"] for w in result.record["windows"]] == [60, 60]
