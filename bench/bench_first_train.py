"""The first ``run_training`` of a process with and without ctpipe's AutoGraph rules
(core/autograph_rules.py), each in a fresh process on the same small sealed store.

    .venv/bin/python bench/bench_first_train.py [--rows-per-hour 200] [--hours 2]

Prints one JSON line per variant: seconds of the first backfill (for scale) and of the first
train (1 epoch). Without the rules, AutoGraph transpiles tf_keras's and tf.Transform's own code
on the first fit/evaluate/export of every process.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import datetime as dt, json, sys, tempfile, time
import pipeline  # TF_USE_LEGACY_KERAS before TensorFlow loads
import training.trainer  # applies the rules
from tensorflow.python.autograph.core import config as ag
from core import autograph_rules
if sys.argv[1] == "without":
    ag.CONVERSION_RULES = tuple(r for r in ag.CONVERSION_RULES
                                if getattr(r, "_prefix", None) not in autograph_rules.LIBRARIES)
from pipeline import synthetic
from pipeline.backfill import run_backfill
from pipeline.config import config_from_dict
from pipeline.controller import run_training
from pipeline.options import pipeline_options
hours, rows = int(sys.argv[2]), int(sys.argv[3])
base = tempfile.mkdtemp(prefix="bench-first-train-")
synthetic.write_jsonl(base + "/events", synthetic.generate(dt.datetime(2026, 11, 27), hours, rows), rows_per_hour=rows)
data = {"storage": {"root": base + "/store"}, "source": {"files": {"uri": base + "/events/*.jsonl"}},
        "registry": {"uri": base + "/registry", "model_name": "m"}, "training": {"epochs": 1}}
t = time.time()
run_backfill(config_from_dict(data), pipeline_options(sys.argv[4]), None, None)
backfill_s = time.time() - t
t = time.time()
run_training(config_from_dict(data))
print(json.dumps({"variant": sys.argv[1], "rows": hours * rows, "backfill_s": round(backfill_s, 1),
                  "first_train_s": round(time.time() - t, 1)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=2)
    parser.add_argument("--rows-per-hour", type=int, default=200)
    args = parser.parse_args()
    direct = os.path.join(REPO, "runner_configs", "direct.yaml")
    for variant in ("without", "with"):
        proc = subprocess.run([sys.executable, "-c", CHILD, variant, str(args.hours), str(args.rows_per_hour), direct],
                              cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{variant}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
