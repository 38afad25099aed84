"""Training examples/s: ctpipe's trainer vs a plain Keras fit on the same TFRecords, same run.

    python bench/bench_training.py [--hours 4] [--rows 5000] [--epochs 3] [--batch-size 256]
                                   [--repeats 2] [--workdir DIR] [--out FILE]

Setup (not timed in the comparison): synthetic events -> `ctpipe backfill` (DirectRunner) -> sealed
windows holding raw and transformed TFRecords, plus the tf.Transform output.

- ctpipe: ``training.trainer.train_and_export`` on those windows, the path `ctpipe train` runs:
  raw and transformed files zipped row by row, train/eval split by a hash of the id,
  BackupAndRestore, the strategy from the environment; then the SavedModel export.
- plain Keras: ``tf.data.TFRecordDataset`` over the same transformed files -> shuffle -> batch ->
  parse_example -> ``model.fit``; the same ``model_fn``, batch size and epochs.

examples/s = examples seen by ``fit`` (per epoch x epochs run) / seconds spent in ``fit``, so the
plain baseline's larger input (it has no held-out split) does not skew the ratio. The two run
alternately ``--repeats`` times; the best of each is reported with every run. GPU: TensorFlow
places the model on the first GPU when one is visible; the JSON lists the devices it saw.
Prints JSON (and writes it to --out).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pipeline  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)


def build_windows(workdir: str, hours: int, rows: int):
    from core import window_store
    from pipeline import synthetic
    from pipeline.backfill import run_backfill
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    events = os.path.join(workdir, "events")
    synthetic.write_jsonl(events, synthetic.generate(dt.datetime(2026, 11, 27), hours, rows,
                                                     malformed_per_hour=0, out_of_range_per_hour=0),
                          rows_per_hour=rows)
    config = config_from_dict({"storage": {"root": os.path.join(workdir, "store")},
                               "source": {"files": {"uri": os.path.join(events, "*.jsonl")}},
                               "registry": {"uri": os.path.join(workdir, "registry")}})
    run_backfill(config, pipeline_options(os.path.join(repo, "runner_configs", "direct.yaml")), None, None)
    windows = [w for w in window_store.list_sealed(config.storage.root) if w.usable_for_training]
    if not windows:
        raise SystemExit(f"bench_training: the backfill under {workdir} sealed no usable window")
    return config, windows


def run_ctpipe(config, windows, epochs: int, batch_size: int, scratch: str) -> dict:
    from pipeline.controller import local_transform_dir
    from training.trainer import TrainSpec, train_and_export
    from transforms.preprocess import load_function

    fingerprint = windows[-1].manifest["transform_fingerprint"]
    spec = TrainSpec(transform_dir=local_transform_dir(config.storage.root, fingerprint, scratch),
                     transform_fingerprint=fingerprint, label_key=config.label_field, id_field=config.id_field,
                     event_time_field=config.event_time.field, eval_fraction=config.training.eval_fraction,
                     epochs=epochs, batch_size=batch_size,
                     backup_dir=tempfile.mkdtemp(prefix="backup-", dir=scratch))  # fresh: no resume
    started = time.perf_counter()
    facts = train_and_export(windows, spec, load_function(config.training.model_fn, "training.model_fn"),
                             os.path.join(scratch, "export"))
    total = time.perf_counter() - started
    return {"examples_per_epoch": facts["train_examples"], "epochs_run": facts["epochs_run"],
            "fit_seconds": facts["training_seconds"], "examples_per_second": facts["examples_per_second"],
            "seconds_with_export": round(total, 3), "strategy": facts["strategy"], "device": facts["device"]}


def run_plain(config, windows, epochs: int, batch_size: int) -> dict:
    import tensorflow as tf
    import tensorflow_transform as tft

    from transforms.preprocess import load_function

    fingerprint = windows[-1].manifest["transform_fingerprint"]
    tft_output = tft.TFTransformOutput(os.path.join(config.storage.root, "transforms", fingerprint))
    spec = tft_output.transformed_feature_spec()
    label = config.label_field
    files = [p for w in windows for p in w.file_paths("transformed")]

    def parse(batch):
        features = tf.io.parse_example(batch, spec)
        y = features.pop(label)
        return features, tf.cast(y, tf.float32)

    dataset = (tf.data.TFRecordDataset(files, compression_type="GZIP")
               .shuffle(10_000, seed=17, reshuffle_each_iteration=True)
               .batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))
    examples = int(tf.data.TFRecordDataset(files, compression_type="GZIP")
                   .reduce(tf.constant(0, tf.int64), lambda n, _x: n + 1).numpy())
    model = load_function(config.training.model_fn, "training.model_fn")(spec, label, tft_output)
    started = time.perf_counter()
    model.fit(dataset, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - started
    return {"examples_per_epoch": examples, "epochs_run": epochs, "fit_seconds": round(seconds, 3),
            "examples_per_second": round(examples * epochs / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=4, help="one-hour windows to generate (default 4)")
    parser.add_argument("--rows", type=int, default=5000, help="events per window (default 5000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each (default 2)")
    parser.add_argument("--workdir", help="where data, windows and exports go (default: a temp dir)")
    parser.add_argument("--out", help="also write the JSON result to this file")
    args = parser.parse_args()

    import tensorflow as tf

    workdir = args.workdir or tempfile.mkdtemp(prefix="ctpipe-bench-training-")
    os.makedirs(workdir, exist_ok=True)
    started = time.perf_counter()
    config, windows = build_windows(workdir, args.hours, args.rows)
    setup_seconds = time.perf_counter() - started

    ctpipe_runs, plain_runs = [], []
    for i in range(args.repeats):
        plain_runs.append(run_plain(config, windows, args.epochs, args.batch_size))
        ctpipe_runs.append(run_ctpipe(config, windows, args.epochs, args.batch_size,
                                      tempfile.mkdtemp(prefix=f"ctpipe-{i}-", dir=workdir)))
    best_ctpipe = max(ctpipe_runs, key=lambda r: r["examples_per_second"])
    best_plain = max(plain_runs, key=lambda r: r["examples_per_second"])
    result = {
        "benchmark": "training examples/s: ctpipe trainer vs plain Keras fit, same TFRecords, same run",
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
                 "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
                 "device_used": best_ctpipe["device"]},
        "data": {"windows": len(windows), "rows_per_window": args.rows, "epochs": args.epochs,
                 "batch_size": args.batch_size, "setup_seconds": round(setup_seconds, 1)},
        "ctpipe": {"examples_per_second": best_ctpipe["examples_per_second"], "runs": ctpipe_runs},
        "plain_keras": {"examples_per_second": best_plain["examples_per_second"], "runs": plain_runs},
        "ratio_ctpipe_over_plain": round(best_ctpipe["examples_per_second"] / best_plain["examples_per_second"], 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
