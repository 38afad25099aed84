"""Backfill throughput: ctpipe's backfill graph vs the TFX-style baseline, same input, same run.

Baseline (shared/DESIGN.md): ReadFromText -> json.loads -> TFT AnalyzeAndTransformDataset on
instance dicts -> ExampleProtoCoder -> WriteToTFRecord on DirectRunner (what TFX's Transform
component does for one span), plus TFDV GenerateStatistics (StatisticsGen) over the same rows.
ctpipe does more on the same rows: decode with dead-letter routing, per-window grouping and
de-duplication, per-window statistics and validation, raw and transformed TFRecords per window,
manifests.

    .venv/bin/python bench/bench_backfill.py --rows 200000

Prints one JSON object (rows/s of each and the ratio).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pipeline  # noqa: E402,F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_baseline(events_glob: str, schema, out_dir: str, options) -> float:
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform import coders as tft_coders
    from tensorflow_transform.tf_metadata import dataset_metadata

    from examples.sensors import preprocessing_fn

    raw_metadata = dataset_metadata.DatasetMetadata(schema)
    names = [f.name for f in schema.feature]

    def to_instance(line):
        event = json.loads(line)
        return {name: [event[name]] for name in names}

    start = time.perf_counter()
    with beam.Pipeline(options=options) as p:
        with tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp")):
            rows = p | "Read" >> beam.io.ReadFromText(events_glob) | "Parse" >> beam.Map(to_instance)
            (transformed, transformed_metadata), _fn = (rows, raw_metadata) | tft_beam.AnalyzeAndTransformDataset(
                preprocessing_fn)
            coder = tft_coders.ExampleProtoCoder(transformed_metadata.schema)
            _ = (transformed | "Encode" >> beam.Map(coder.encode)
                 | "Write" >> beam.io.WriteToTFRecord(os.path.join(out_dir, "data"), file_name_suffix=".gz"))
            _ = (p | "ReadForStats" >> beam.io.ReadFromText(events_glob)
                 | "ToDataFrameRows" >> beam.Map(lambda line: _to_arrow(json.loads(line), names))
                 | "BatchStats" >> beam.combiners.ToList()
                 | "ToBatch" >> beam.FlatMap(_concat_batches)
                 | "Stats" >> tfdv.GenerateStatistics()
                 | "WriteStats" >> tfdv.WriteStatisticsToBinaryFile(os.path.join(out_dir, "stats.pb")))
    return time.perf_counter() - start


def _to_arrow(event, names):
    return {n: event.get(n) for n in names}


def _concat_batches(rows, size=10_000):
    import pyarrow as pa

    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        arrays, fields = [], []
        for name in chunk[0]:
            values = [[r[name]] if r[name] is not None else None for r in chunk]
            arrays.append(pa.array(values))
            fields.append(name)
        yield pa.RecordBatch.from_arrays(arrays, fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    from core import schema_store
    from pipeline import synthetic
    from pipeline.backfill import run_backfill
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    work = args.workdir or tempfile.mkdtemp(prefix="ctpipe-bench-")
    shutil.rmtree(work, ignore_errors=True)
    per_hour = args.rows // args.hours
    stats = synthetic.write_jsonl(os.path.join(work, "events"),
                                  synthetic.generate(dt.datetime(2026, 11, 27), args.hours, per_hour,
                                                     malformed_per_hour=0, out_of_range_per_hour=0),
                                  rows_per_hour=per_hour)
    events_glob = os.path.join(work, "events", "*.jsonl")
    options = pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml"))
    config = config_from_dict({"storage": {"root": os.path.join(work, "store")},
                               "source": {"files": {"uri": events_glob}}})

    start = time.perf_counter()
    result = run_backfill(config, options, None, None)
    ctpipe_s = time.perf_counter() - start
    schema, _text, _v = schema_store.load(config.storage.root)

    baseline_s = run_baseline(events_glob, schema, os.path.join(work, "baseline"), options)
    rows = stats.valid
    out = {
        "rows": rows, "windows": len(result.record["windows"]),
        "ctpipe_backfill_seconds": round(ctpipe_s, 2), "ctpipe_rows_per_s": round(rows / ctpipe_s),
        "tfx_baseline_seconds": round(baseline_s, 2), "tfx_baseline_rows_per_s": round(rows / baseline_s),
        "ratio_ctpipe_over_baseline": round(baseline_s / ctpipe_s, 3),
        "note": "ctpipe time includes schema inference on the first run (one extra read + statistics pass)",
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
