"""``ctpipe demo``: the whole thin path on embedded defaults, under one work directory."""
from __future__ import annotations

import os

from core import window_store
from pipeline import synthetic
from pipeline.config import config_from_dict


def demo_config(workdir: str):
    workdir = os.path.abspath(workdir)
    return config_from_dict({
        "storage": {"root": os.path.join(workdir, "store")},
        "source": {"files": {"uri": os.path.join(workdir, "events", "*.jsonl"), "format": "jsonl"}},
        "registry": {"uri": os.path.join(workdir, "registry"), "model_name": "sensors"},
    })


def run_demo(workdir: str, options, hours: int = 6, rows_per_hour: int = 2000) -> dict:
    import datetime as dt

    from pipeline.backfill import run_backfill
    from pipeline.controller import run_training

    config = demo_config(workdir)
    events_dir = os.path.join(os.path.abspath(workdir), "events")
    gen = None
    if not os.path.isdir(events_dir):
        gen = synthetic.write_jsonl(events_dir, synthetic.generate(dt.datetime(2026, 11, 27), hours, rows_per_hour),
                                    rows_per_hour=rows_per_hour + 3)
    backfill = run_backfill(config, options, None, None)
    training = run_training(config)
    windows = window_store.list_sealed(config.storage.root)
    counters = backfill.record["counters"]
    dead = sum(v for k, v in counters.items() if k.startswith("deadletter:"))
    anomalies = sum(1 for w in windows if w.verdict != "PASS")
    lines = [
        f"events: {counters.get('records_in', 0)} read from {events_dir}"
        + (f" (generated {gen.valid} valid, {gen.malformed} malformed)" if gen else ""),
        f"windows sealed: {len(windows)} ({sum(w.manifest['record_count'] for w in windows)} records); "
        f"dead letters: {dead}; windows with anomalies: {anomalies}",
        f"model: {config.registry.model_name} "
        + (f"v{training['version']} pushed, production -> v{training['version']}" if training["pushed"]
           else "not blessed, nothing pushed")
        + f"; AUC {training['metrics']['auc']:.3f} on {training['metrics']['example_count']} held-out examples",
        f"look around: ctpipe windows list --config {os.path.join(workdir, 'ctpipe.yaml')}",
    ]
    _write_config(config, os.path.join(workdir, "ctpipe.yaml"))
    return {"lines": lines, "windows": len(windows), "dead_letters": dead, "anomalous_windows": anomalies,
            "model_version": training["version"], "metrics": training["metrics"], "pushed": training["pushed"],
            "backfill_run": backfill.run_id, "train_run": training["run_id"]}


def _write_config(config, path: str) -> None:
    """Leave a ctpipe.yaml beside the demo data so the other commands can inspect it."""
    import yaml

    data = {"storage": {"root": config.storage.root},
            "source": {"files": {"uri": config.source.files.uri, "format": "jsonl"}},
            "registry": {"uri": config.registry.uri, "model_name": config.registry.model_name}}
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
