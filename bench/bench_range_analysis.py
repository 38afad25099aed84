"""Analysis time of training run k+1 over a rolling range of 8 windows, with and without
tf.Transform's analyzer cache (training.analyze_range, pipeline/range_transform.py).

    .venv/bin/python bench/bench_range_analysis.py [--rows-per-hour 5000] [--windows 8]

One backfill seals windows+1 windows. Then, on DirectRunner:
- run k analyzes windows 0..N-1 (nothing cached yet: every window analyzed, entries written);
- run k+1 with cache analyzes windows 1..N: N-1 entries read from cache, one window analyzed;
- run k+1 without cache: the same range after the cache folder and that range's published
  transform were removed, so all N windows are analyzed again.
Prints one JSON line: seconds of each, the windows analyzed / read from cache, and the ratio.
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-hour", type=int, default=5000)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--runner-config", default=os.path.join(REPO, "runner_configs", "direct.yaml"))
    args = parser.parse_args()

    from core import layout, window_store
    from core.transform_store import transform_dir
    from pipeline import synthetic
    from pipeline.backfill import run_backfill
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options
    from pipeline.range_transform import analyze_range, range_fingerprint

    base = tempfile.mkdtemp(prefix="bench-range-analysis-")
    n = args.windows
    synthetic.write_jsonl(os.path.join(base, "events"),
                          synthetic.generate(dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc), n + 1,
                                             args.rows_per_hour), rows_per_hour=args.rows_per_hour)
    config = config_from_dict({"storage": {"root": os.path.join(base, "store")},
                               "source": {"files": {"uri": os.path.join(base, "events", "*.jsonl")}},
                               "training": {"analyze_range": True}})
    options = pipeline_options(args.runner_config)
    started = time.time()
    run_backfill(config, options, None, None)
    backfill_s = time.time() - started
    windows = window_store.list_sealed(config.storage.root)
    assert len(windows) == n + 1, f"expected {n + 1} windows, sealed {len(windows)}"

    def timed(chosen):
        t = time.time()
        record = analyze_range(config, chosen, range_fingerprint(config, chosen), options)
        return round(time.time() - t, 2), record

    run_k_s, run_k = timed(windows[0:n])
    warm_s, warm = timed(windows[1:n + 1])
    shutil.rmtree(layout.analyzer_cache_root(config.storage.root))
    shutil.rmtree(transform_dir(config.storage.root, warm["fingerprint"]))
    cold_s, cold = timed(windows[1:n + 1])
    print(json.dumps({
        "windows_in_range": n, "rows_per_window": args.rows_per_hour, "backfill_s": round(backfill_s, 2),
        "run_k_s": run_k_s, "run_k_analyzed": run_k["analyzed"],
        "run_k1_with_cache_s": warm_s, "with_cache_analyzed": warm["analyzed"], "with_cache_from_cache": warm["from_cache"],
        "run_k1_without_cache_s": cold_s, "without_cache_analyzed": cold["analyzed"],
        "speedup": round(cold_s / warm_s, 2) if warm_s else None,
    }))
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
