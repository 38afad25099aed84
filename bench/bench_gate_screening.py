"""False alarms and misses of the gate's screening on the synthetic streams (docs/GATE.md).

    python bench/bench_gate_screening.py [--windows 12] [--rows 500] [--workdir DIR]

One production model is trained (``ctpipe backfill`` + ``ctpipe train`` on hours 0-2 of concept 0,
as the controller would), then ``--windows`` further windows of each kind are sealed: clean
(concept 0: stationary), clean after an abrupt concept change (concept 1), every label flipped
(concept 0 and concept 1), 40% flipped, shuffled. Production scores each window's held-out
split and ``training.trust.screen_decision`` decides, first with no concept change on record, then
with the largest drop measured on the concept-change windows on record. Prints JSON: per kind,
how many windows got each decision, and production's AUC range.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KINDS = (("stationary", 0, None), ("concept_change", 1, None), ("flip_concept_0", 0, "flip"),
         ("flip_concept_1", 1, "flip"), ("partial_flip_40", 0, "partial_flip"), ("shuffle", 0, "shuffle"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=12, help="windows of each kind")
    parser.add_argument("--rows", type=int, default=500, help="events per window")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    from core import window_store
    from pipeline import synthetic
    from pipeline.backfill import run_backfill
    from pipeline.config import ScreeningConfig, config_from_dict
    from pipeline.controller import run_training
    from pipeline.options import pipeline_options
    from training.data import raw_eval_examples
    from training.evaluate import evaluate_model
    from training.registry import open_registry
    from training.trust import screen_decision

    work = args.workdir or tempfile.mkdtemp(prefix="bench-screening-")
    shutil.rmtree(os.path.join(work, "store"), ignore_errors=True)
    shutil.rmtree(os.path.join(work, "registry"), ignore_errors=True)
    day = dt.datetime(2026, 11, 27)
    config = config_from_dict({
        "storage": {"root": os.path.join(work, "store")},
        "source": {"files": {"uri": os.path.join(work, "events", "*.jsonl")}},
        "registry": {"uri": os.path.join(work, "registry"), "model_name": "bench"},
        "validation": {"labels": {"enabled": False}},  # screen every window, also those validation would stop
        "training": {"epochs": 3, "batch_size": 32, "backup_dir": os.path.join(work, "backup")}})
    options = pipeline_options(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                            "runner_configs", "direct.yaml"))

    def write(lines):
        shutil.rmtree(os.path.join(work, "events"), ignore_errors=True)
        synthetic.write_jsonl(os.path.join(work, "events"), lines, rows_per_hour=args.rows)

    write(synthetic.drift_stream(day, 3, args.rows, seed=31))
    run_backfill(config, options, None, None)
    production = run_training(config)
    reference = production["metrics"]["auc"]
    hours, lines = {}, []
    hour = 3
    for name, concept, corruption in KINDS:
        for _ in range(args.windows):
            # concept c at hour h: change_every=1 alternates 0/1 by hour parity
            h = hour if hour % 2 == concept else hour + 1
            lines += list(synthetic.drift_stream(day, 1, args.rows, change_every=1, seed=31, first_hour=h,
                                                 corrupt={h: corruption} if corruption else None))
            hours[h] = name
            hour = h + 1
    write(lines)
    run_backfill(config, options, None, None)
    registry = open_registry(config.registry.uri)
    model_dir = registry.fetch("bench", production["version"], os.path.join(work, "production"))
    aucs = {name: [] for name, _, _ in KINDS}
    for h, name in sorted(hours.items()):
        window = window_store.latest_sealed(config.storage.root, (day + dt.timedelta(hours=h)).strftime("%Y%m%dT%H%MZ"))
        examples = raw_eval_examples([window], config.id_field, config.training.eval_fraction)
        aucs[name].append(evaluate_model(model_dir, examples, config.label_field)["auc"])
    settings = ScreeningConfig()
    concept_drops = [reference - a for a in aucs["concept_change"]]
    result = {"windows_per_kind": args.windows, "rows": args.rows, "production_reference_auc": round(reference, 4),
              "recorded_concept_change_drop": round(max(concept_drops), 4), "kinds": {}}
    for name, values in aucs.items():
        entry = {"production_auc": [round(min(values), 3), round(max(values), 3)]}
        for label, past in (("no_history", []), ("with_recorded_change", [max(concept_drops)])):
            decisions = [screen_decision(name, a, reference, past, settings)["decision"] for a in values]
            entry[label] = {d: decisions.count(d) for d in ("ok", "concept_change", "collapse")}
        result["kinds"][name] = entry
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
