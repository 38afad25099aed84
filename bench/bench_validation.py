"""Validation overhead per window vs TFDV's own GenerateStatistics, same data, same run.

    python bench/bench_validation.py [--windows 12] [--rows 5000]

Per window, ctpipe's validation = statistics (stats_impl.generate_statistics_in_memory) + schema
and drift validation against the previous window + skew against serving statistics + our own
drift scores + record-level checks on every event. The baseline is what TFX's StatisticsGen does:
tfdv.GenerateStatistics over the same RecordBatches in a Beam pipeline (DirectRunner). Prints JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--rows", type=int, default=5000, help="events per window")
    args = parser.parse_args()

    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions

    from core.records import SourceRecord
    from pipeline import synthetic
    from transforms.arrow import events_to_record_batch
    from transforms.decode import DecodeSpec, decode_record
    from transforms.record_checks import check_event, record_rules
    from transforms.validation import (
        decide,
        distribution_scores,
        feature_thresholds,
        feature_types,
        infer_schema,
        stats_options,
        validate_skew,
        validate_window,
        window_statistics,
        with_drift_comparators,
        with_skew_comparators,
    )

    spec = DecodeSpec("ts", "id")
    windows = []
    for w in range(args.windows):
        lines = synthetic.generate(dt.datetime(2026, 11, 27) + dt.timedelta(hours=w), 1, args.rows, seed=w,
                                   malformed_per_hour=0, out_of_range_per_hour=0, first_index=w * 10 ** 6)
        windows.append([decode_record(SourceRecord("bench", str(i), line), spec) for i, (line, _ev) in enumerate(lines)])
    first_types = {"device_id": "BYTES", "firmware": "BYTES", "humidity": "FLOAT", "id": "BYTES", "label": "INT",
                   "temperature": "FLOAT", "ts": "BYTES", "vibration": "FLOAT"}
    batches = [events_to_record_batch(events, first_types) for events in windows]
    schema = infer_schema(window_statistics(batches[0], "w0"), "label", "id", "ts")
    assert feature_types(schema) == first_types
    drift_schema = with_drift_comparators(schema, 0.1, 0.15, ("id", "ts"), count_ratio=(0.5, 2.0))
    skew_schema = with_skew_comparators(schema, 0.1, 0.15, ("id", "ts"))
    thresholds = feature_thresholds(schema, 0.1, 0.15, skip=("id", "ts"))
    serving = window_statistics(batches[0], "serving")
    rules = record_rules(schema)

    # ctpipe validation, window by window
    per_window, parts = [], {"record_checks": 0.0, "statistics": 0.0, "validate": 0.0, "skew": 0.0, "scores": 0.0}
    previous = None
    verdicts = []
    for events, batch in zip(windows, batches):
        t0 = time.perf_counter()
        bad = sum(1 for e in events if check_event(e, rules) is not e)
        t1 = time.perf_counter()
        stats = window_statistics(batch, "w")
        t2 = time.perf_counter()
        anomalies = validate_window(stats, drift_schema, previous)
        t3 = time.perf_counter()
        skew = validate_skew(stats, skew_schema, serving)
        t4 = time.perf_counter()
        if previous is not None:
            distribution_scores(stats, previous, thresholds)
        verdicts.append(decide(anomalies, (), bad, len(events), 0.05, skew).verdict)
        t5 = time.perf_counter()
        for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            parts[key] += value
        per_window.append(t5 - t0)
        previous = stats

    # Baseline: TFDV GenerateStatistics (StatisticsGen) over the same batches, one Beam pipeline per window
    baseline = []
    for batch in batches:
        t0 = time.perf_counter()
        with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])) as p:
            _ = p | beam.Create([batch]) | tfdv.GenerateStatistics(stats_options()) | beam.Map(lambda s: None)
        baseline.append(time.perf_counter() - t0)

    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    steady = slice(1, None)  # the first window warms caches in both paths
    print(json.dumps({
        "windows": args.windows, "rows_per_window": args.rows, "verdicts": sorted(set(verdicts)),
        "ctpipe_validation_s_per_window": round(mean(per_window[steady]), 4),
        "ctpipe_parts_s_per_window": {k: round(v / args.windows, 4) for k, v in parts.items()},
        "tfdv_generate_statistics_beam_s_per_window": round(mean(baseline[steady]), 4),
        "ratio_ctpipe_over_tfdv_beam": round(mean(per_window[steady]) / mean(baseline[steady]), 3),
        "ctpipe_rows_per_s": round(args.rows / mean(per_window[steady])),
    }, indent=2))


if __name__ == "__main__":
    main()
