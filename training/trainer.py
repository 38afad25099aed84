"""Training a Keras model on sealed windows and exporting it for serving on raw tf.Examples.

``train_and_export`` is the core function: no registry or controller plumbing, so it can be
tested and reused alone. The exported SavedModel's ``serving_default`` signature takes
``examples`` (a batch of serialized raw tf.Examples), applies the tf.Transform layer and the
model, and returns ``probability``: serving needs nothing else. Keras weights are saved beside it
(``warmstart/``) so the next candidate can start from them.

Under MultiWorkerMirroredStrategy (TF_CONFIG with several workers) every worker runs this same
function: all of them train and all of them export (saving is a collective step), the chief to
``export_dir`` and the others to a scratch directory the caller throws away. BackupAndRestore
keeps the state of the last finished epoch in ``backup_dir`` (shared by the workers), so after a
crash a restarted run resumes there; the facts say which epoch it resumed from and how many epochs
this run actually ran.

``TrainSpec.progress_dir`` (``ctpipe train --progress-dir``): when set, every worker rewrites
``<dir>/progress-<task type>-<index>.json`` ({"epoch", "batch", "state", "pid"}) after every
batch, so a test or an operator can see that training is under way, e.g. to kill a worker
mid-epoch.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from core import autograph_rules
from training.data import eval_masks, training_dataset
from training.strategy import describe_environment, strategy_from_environment, task_name

autograph_rules.apply()  # the first fit/evaluate/export of a process: minutes of AutoGraph otherwise

WARMSTART_DIR = "warmstart"
SIGNATURE_FILE = "signature.json"


@dataclass(frozen=True)
class TrainSpec:
    transform_dir: str          # local dir with transform_fn/ and transformed_metadata/
    transform_fingerprint: str
    label_key: str
    id_field: str
    event_time_field: str
    eval_fraction: float
    epochs: int
    batch_size: int
    backup_dir: str             # BackupAndRestore state: stable per training input, survives a kill
    progress_dir: Optional[str] = None  # where each worker rewrites progress-<task>.json after every batch


def input_signature(transformed_spec: dict, label_key: str) -> dict:
    """What a model's inputs look like; warm start needs the same signature."""
    return {k: repr(v) for k, v in sorted(transformed_spec.items()) if k != label_key}


def _serving_fn(model, tft_output, label_key: str, drop: Sequence[str]):
    raw_spec = tft_output.raw_feature_spec()
    raw_spec.pop(label_key, None)
    for name in drop:
        raw_spec.pop(name, None)
    model.tft_layer = tft_output.transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples):
        parsed = tf.io.parse_example(examples, raw_spec)
        transformed = model.tft_layer(parsed)
        inputs = {name: transformed[name] for name in model.input_names}
        return {"probability": model(inputs)}

    return serve


def export_serving_model(model, tft_output, export_dir: str, label_key: str, optional_raw: Sequence[str]) -> None:
    """Save ``model`` with a raw-tf.Example serving signature (tf.Transform layer inside).

    Raw fields in ``optional_raw`` (id, event time) are left out of the parsing spec when the
    transform does not need them, so serving requests need not carry them.
    """
    try:
        serve = _serving_fn(model, tft_output, label_key, optional_raw)
        concrete = serve.get_concrete_function()
    except (KeyError, ValueError, TypeError):
        serve = _serving_fn(model, tft_output, label_key, ())
        concrete = serve.get_concrete_function()
    tf.saved_model.save(model, export_dir, signatures={"serving_default": concrete})


class EpochCounter(tf.keras.callbacks.Callback):
    """Which epochs this run actually ran (BackupAndRestore skips the ones a backup holds)."""

    def __init__(self):
        super().__init__()
        self.epochs: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(int(epoch))


class ProgressFile(tf.keras.callbacks.Callback):
    """Rewrites ``path`` with the current epoch and batch after every batch (atomic rename)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.epoch = 0
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def _write(self, batch: int, state: str) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"epoch": self.epoch, "batch": batch, "state": state, "pid": os.getpid()}, handle)
        os.replace(tmp, self.path)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = int(epoch)
        self._write(-1, "epoch_begin")

    def on_train_batch_end(self, batch, logs=None):
        self._write(int(batch), "batch_end")

    def on_train_end(self, logs=None):
        self._write(-1, "train_end")


def training_callbacks(spec: TrainSpec) -> tuple[list, EpochCounter]:
    counter = EpochCounter()
    callbacks = [tf.keras.callbacks.BackupAndRestore(spec.backup_dir), counter]
    if spec.progress_dir:
        callbacks.append(ProgressFile(os.path.join(spec.progress_dir, f"progress-{task_name()}.json")))
    return callbacks, counter


def train_and_export(windows: Sequence, spec: TrainSpec, model_fn: Callable, export_dir: str,
                     warm_start_dir: Optional[str] = None, warm_start_signature: Optional[dict] = None) -> dict:
    """Train on ``windows`` and export to ``export_dir``; returns facts for lineage."""
    # MultiWorkerMirroredStrategy configures the collective runtime: create it before any TF op.
    strategy, strategy_name = strategy_from_environment()
    tft_output = tft.TFTransformOutput(spec.transform_dir)
    transformed_spec = tft_output.transformed_feature_spec()
    if spec.label_key not in transformed_spec:
        from core.errors import ConfigError

        raise ConfigError(f"the preprocessing_fn does not output the label {spec.label_key!r}; "
                          "pass it through (outputs[label] = inputs[label]) or fix label_field")
    signature = input_signature(transformed_spec, spec.label_key)
    replicas = strategy.num_replicas_in_sync
    masks = eval_masks(windows, spec.id_field, spec.eval_fraction)
    dataset = training_dataset(windows, spec.id_field, spec.eval_fraction, transformed_spec, spec.label_key,
                               spec.batch_size * replicas, tft_output=tft_output,
                               fingerprint=spec.transform_fingerprint, masks=masks)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)

    with strategy.scope():
        model = model_fn(transformed_spec, spec.label_key, tft_output)
    warm = {"used": False, "reason": "no production model"}
    if warm_start_dir is not None:
        if warm_start_signature != signature:
            warm = {"used": False, "reason": "production model has a different input signature"}
        else:
            try:
                model.load_weights(os.path.join(warm_start_dir, "weights")).expect_partial()
                warm = {"used": True, "reason": "same transform fingerprint and signature as production"}
            except (ValueError, tf.errors.OpError) as exc:
                warm = {"used": False, "reason": f"production weights do not fit this model: {exc}"}

    callbacks, counter = training_callbacks(spec)
    started = time.time()
    history = model.fit(dataset, epochs=spec.epochs, callbacks=callbacks, verbose=0)
    duration = time.time() - started
    examples = sum(int((~mask).sum()) for mask in masks)
    epochs_run = len(counter.epochs)

    export_serving_model(model, tft_output, export_dir, spec.label_key, (spec.id_field, spec.event_time_field))
    os.makedirs(os.path.join(export_dir, WARMSTART_DIR), exist_ok=True)
    model.save_weights(os.path.join(export_dir, WARMSTART_DIR, "weights"))
    with open(os.path.join(export_dir, WARMSTART_DIR, SIGNATURE_FILE), "w", encoding="utf-8") as handle:
        json.dump(signature, handle, sort_keys=True)
    return {
        "strategy": strategy_name, "replicas": replicas, "workers": max(1, describe_environment()["workers"]),
        "device": "GPU" if tf.config.list_logical_devices("GPU") else "CPU",
        "train_examples": examples, "batch_size": spec.batch_size, "epochs": spec.epochs,
        "epochs_run": epochs_run, "resumed_from_epoch": counter.epochs[0] if counter.epochs else spec.epochs,
        "training_seconds": round(duration, 3),
        "examples_per_second": round(examples * epochs_run / duration, 1) if duration > 0 and epochs_run else None,
        "final_loss": float(history.history["loss"][-1]) if history.history.get("loss") else None,
        "warm_start": warm, "signature": signature,
    }


def backup_dir_for(base: str, windows: Sequence, fingerprint: str, config_hash: str) -> str:
    """A BackupAndRestore directory that is the same for the same training input (so a restarted
    worker resumes) and different for a different input."""
    h = hashlib.sha256(f"{fingerprint}|{config_hash}|".encode())
    for window in windows:
        h.update(f"{window.window_id}:v{window.version};".encode())
    return os.path.join(base, "backup-" + h.hexdigest()[:16])
