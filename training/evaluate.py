"""Evaluation of SavedModels on raw tf.Examples, and the evaluation gate (TFMA-style thresholds).

Candidate and production are evaluated through their serving signatures on the same held-out raw
examples, so the comparison includes each model's own tf.Transform layer. The gate combines value
thresholds (bounds) with change thresholds against production; change thresholds are skipped only
when there is no production model, and the blessing says so.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from core.ranking import auc_score

DEFAULT_HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "log_loss": False, "example_count": True}


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    labels = np.asarray(labels, dtype=np.float64)
    if len(labels) == 0:
        return {"auc": float("nan"), "accuracy": float("nan"), "log_loss": float("nan"), "example_count": 0}
    return {
        "auc": auc_score(labels, probs),
        "accuracy": float(np.mean((probs >= 0.5) == (labels >= 0.5))),
        "log_loss": float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))),
        "example_count": int(len(labels)),
    }


@functools.lru_cache(maxsize=4)
def _serving(model_dir: str):
    """(loaded SavedModel, its serving signature): loaded once per directory, since the gate scores
    the same model on several example sets (newest windows, trusted windows, golden set)."""
    loaded = tf.saved_model.load(model_dir)
    return loaded, loaded.signatures["serving_default"]


def predict(model_dir: str, serialized: Sequence[bytes], batch_size: int = 2048) -> np.ndarray:
    _loaded, serve = _serving(model_dir)
    out = []
    for start in range(0, len(serialized), batch_size):
        batch = tf.constant(list(serialized[start:start + batch_size]))
        result = serve(examples=batch)
        out.append(np.reshape(next(iter(result.values())).numpy(), [-1]))
    return np.concatenate(out) if out else np.zeros([0])


def labels_and_slices(serialized: Sequence[bytes], label_key: str, slice_feature: Optional[str]):
    spec = {label_key: tf.io.FixedLenFeature([], tf.int64, default_value=0)}
    if slice_feature:
        spec[slice_feature] = tf.io.VarLenFeature(tf.string)
    parsed = tf.io.parse_example(tf.constant(list(serialized)), spec)
    labels = parsed[label_key].numpy()
    slices = None
    if slice_feature:
        dense = tf.sparse.to_dense(parsed[slice_feature], default_value=b"").numpy()
        slices = np.array([row[0].decode() if len(row) else "" for row in dense])
    return labels, slices


def evaluate_model(model_dir: str, serialized: Sequence[bytes], label_key: str,
                   slice_feature: Optional[str] = None) -> dict:
    """Overall metrics plus the same per value of ``slice_feature``."""
    labels, slices = labels_and_slices(serialized, label_key, slice_feature)
    probs = predict(model_dir, serialized)
    metrics = classification_metrics(labels, probs)
    if slices is not None:
        metrics["slices"] = {f"{slice_feature}={value}": classification_metrics(labels[slices == value],
                                                                                probs[slices == value])
                             for value in sorted(set(slices))}
    return metrics


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def gate(candidate: dict, baseline: Optional[dict], thresholds: Sequence) -> dict:
    """Blessing: every threshold's outcome; blessed only if all checks that apply pass."""
    checks = []
    for t in thresholds:
        higher = DEFAULT_HIGHER_IS_BETTER[t.metric] if t.higher_is_better is None else t.higher_is_better
        value = candidate.get(t.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            checks.append({"metric": t.metric, "kind": "value", "passed": False,
                           "description": f"{t.metric} could not be computed on the evaluation data"})
            continue
        if t.lower_bound is not None:
            checks.append({"metric": t.metric, "kind": "lower_bound", "threshold": t.lower_bound, "value": value,
                           "passed": value >= t.lower_bound,
                           "description": f"{t.metric} {_fmt(value)} >= {t.lower_bound}"})
        if t.upper_bound is not None:
            checks.append({"metric": t.metric, "kind": "upper_bound", "threshold": t.upper_bound, "value": value,
                           "passed": value <= t.upper_bound,
                           "description": f"{t.metric} {_fmt(value)} <= {t.upper_bound}"})
        for kind, allowed in (("change_absolute", t.change_absolute), ("change_relative", t.change_relative)):
            if allowed is None:
                continue
            if baseline is None:
                checks.append({"metric": t.metric, "kind": kind, "skipped": True, "passed": True,
                               "description": f"{t.metric} {kind}: skipped, no production model yet"})
                continue
            base = baseline.get(t.metric)
            delta = value - base
            if kind == "change_relative":
                delta = delta / abs(base) if base else 0.0
            improvement = delta if higher else -delta
            checks.append({"metric": t.metric, "kind": kind, "threshold": allowed, "value": value,
                           "baseline": base, "change": delta, "passed": improvement >= allowed,
                           "description": f"{t.metric} {_fmt(value)} vs production {_fmt(base)}: change "
                                          f"{delta:+.4f} ({'higher' if higher else 'lower'} is better, "
                                          f"allowed {allowed:+})"})
    blessed = all(c["passed"] for c in checks)
    return {"blessed": blessed, "checks": checks, "baseline_available": baseline is not None}
