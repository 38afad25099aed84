"""Label checks of one window: the label's distribution and its consistency with the features.

A labelling fault (every label inverted, a share of them inverted, labels shuffled among rows)
leaves the features untouched, so the schema and drift checks see nothing. Two cheap numbers per
window catch it (docs/GATE.md):

- the **positive rate** of the label, compared with the median of the reference windows (the
  nearest earlier windows usable for training): a full flip of a label that is not 50/50 moves it;
- the **consistency AUC**: a small L2-regularised logistic regression over the window's own
  features (numeric features standardised, categorical ones one-hot over their frequent values),
  fitted on one half of the rows and scored on the other, both ways (two-fold, rows alternating in
  id order). It measures how well the features predict the label *inside* the window, whatever the
  relation is: an abrupt, genuine concept change keeps it (the new relation is as learnable as the
  old one), shuffled labels drive it to 0.5 and a partial flip of a share f scales the signal by
  1 - 2f. It is compared with the median of the reference windows' values.

Pure functions over an Arrow RecordBatch in the TFXIO convention (every column a large_list);
the sealing composite computes the profile per window and the validator decides
(transforms/validate_windows.py). No TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from core.ranking import auc_score

LABEL_MEAN_SHIFT = "LABEL_MEAN_SHIFT"
LABEL_CONSISTENCY_LOW = "LABEL_CONSISTENCY_LOW"
LABEL_KINDS = (LABEL_MEAN_SHIFT, LABEL_CONSISTENCY_LOW)
"""The anomaly kinds these checks report (``validation.blocking_anomalies`` may name them)."""

MAX_PROBE_ROWS = 20_000
"""Larger windows are probed on an evenly spaced sample of this many rows (the cost stays flat)."""


@dataclass(frozen=True)
class LabelCheckSettings:
    label_field: str
    exclude: tuple = ()
    """Columns that are not features (id, event time)."""
    max_mean_shift: Optional[float] = 0.15
    max_consistency_drop: Optional[float] = 0.15
    reference_windows: int = 3
    min_rows: int = 100
    max_categories: int = 32
    l2: float = 1.0


def _first_values(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) of a large_list column: each row's first value, and whether it has one."""
    offsets = np.asarray(column.offsets)
    present = offsets[1:] > offsets[:-1]
    if column.null_count:
        present &= np.asarray(column.is_valid())
    flat = column.values.to_numpy(zero_copy_only=False)
    values = np.empty(len(column), dtype=flat.dtype if flat.dtype != object else object)
    if len(flat):
        values[present] = flat[offsets[:-1][present]]
    return values, present


def _design(batch: pa.RecordBatch, rows: np.ndarray, settings: LabelCheckSettings) -> np.ndarray:
    """Feature matrix (intercept first) of ``rows``: standardised numbers, one-hot frequent strings."""
    blocks = [np.ones((len(rows), 1))]
    for name in sorted(batch.schema.names):
        if name == settings.label_field or name in settings.exclude:
            continue
        column = batch.column(name)
        values, present = _first_values(column)
        values, present = values[rows], present[rows]
        value_type = column.type.value_type
        if pa.types.is_integer(value_type) or pa.types.is_floating(value_type):
            x = np.where(present, values, 0).astype(np.float64)
            if present.sum() < 2:
                continue
            mean, std = x[present].mean(), x[present].std()
            z = np.where(present, (x - mean) / (std if std > 0 else 1.0), 0.0)
            blocks.append(np.column_stack([z, (~present).astype(np.float64)]) if not present.all() else z[:, None])
        else:
            tokens = np.array([v if p else None for v, p in zip(values, present)], dtype=object)
            kept, counts = np.unique(tokens[present].astype(bytes), return_counts=True) if present.any() else ([], [])
            frequent = [v for v, c in sorted(zip(kept, counts), key=lambda vc: -vc[1])
                        if c >= max(2, 0.01 * len(rows))][:settings.max_categories]
            if len(frequent) < 2:
                continue  # a free-text or constant column says nothing a linear probe can use
            blocks.append(np.column_stack([tokens == v for v in frequent]).astype(np.float64))
    return np.column_stack(blocks)


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 25) -> np.ndarray:
    """Weights of an L2-regularised logistic regression (Newton's method; intercept unpenalised)."""
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-6:
            break
    return w


def consistency_auc(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> float:
    """Two-fold out-of-fold AUC of the logistic probe (rows alternate between the folds)."""
    folds = np.arange(len(y)) % 2
    scores = np.empty(len(y))
    for k in (0, 1):
        train, test = folds != k, folds == k
        if len(np.unique(y[train])) < 2:
            return float("nan")
        scores[test] = x[test] @ _fit_logistic(x[train], y[train], l2)
    return auc_score(y, scores)


def label_profile(batch: pa.RecordBatch, settings: LabelCheckSettings) -> Optional[dict]:
    """{rows, positive_rate, consistency_auc} of a window's labelled rows; None without a label column.

    A label other than 0/1 (a regression target, several classes) gets its mean as
    ``positive_rate`` and no consistency value."""
    if settings.label_field not in batch.schema.names:
        return None
    labels, present = _first_values(batch.column(settings.label_field))
    rows = np.flatnonzero(present)
    if len(rows) > MAX_PROBE_ROWS:
        rows = rows[np.linspace(0, len(rows) - 1, MAX_PROBE_ROWS).astype(np.int64)]
    y = labels[rows].astype(np.float64)
    profile = {"rows": int(len(rows)), "positive_rate": round(float(y.mean()), 6) if len(rows) else None,
               "consistency_auc": None}
    if len(rows) >= settings.min_rows and set(np.unique(y)) <= {0.0, 1.0}:
        auc = consistency_auc(_design(batch, rows, settings), y, settings.l2)
        profile["consistency_auc"] = None if np.isnan(auc) else round(float(auc), 6)
    return profile


def check_labels(profile: Optional[dict], references: Sequence[tuple], settings: LabelCheckSettings) -> dict:
    """The checks of ``profile`` against ``references`` ((window_id, profile), newest first):
    {"reference_windows", "reference", "anomalies": [(kind, description)], "skipped": reason|None}."""
    refs = [(wid, p) for wid, p in references if p][:settings.reference_windows]
    out = {"reference_windows": [wid for wid, _ in refs], "reference": {}, "anomalies": [], "skipped": None}
    if profile is None:
        out["skipped"] = f"no {settings.label_field!r} column in this window"
        return out
    if profile["rows"] < settings.min_rows:
        out["skipped"] = (f"{profile['rows']} labelled rows, fewer than validation.labels.min_rows "
                          f"{settings.min_rows}")
        return out
    if not refs:
        out["skipped"] = "no earlier window usable for training to compare with (the first window is not checked)"
        return out
    names = ", ".join(wid for wid, _ in refs)
    rates = [p["positive_rate"] for _, p in refs if p.get("positive_rate") is not None]
    if settings.max_mean_shift is not None and rates and profile["positive_rate"] is not None:
        ref_rate = median(rates)
        out["reference"]["positive_rate"] = round(ref_rate, 6)
        shift = profile["positive_rate"] - ref_rate
        if abs(shift) > settings.max_mean_shift:
            out["anomalies"].append((LABEL_MEAN_SHIFT, (
                f"label {settings.label_field!r} positive rate {profile['positive_rate']:.3f} vs {ref_rate:.3f} "
                f"(median of {names}): shift {shift:+.3f} exceeds validation.labels.max_mean_shift "
                f"{settings.max_mean_shift}; with no matching feature drift this is the mark of inverted labels")))
    aucs = [p["consistency_auc"] for _, p in refs if p.get("consistency_auc") is not None]
    if settings.max_consistency_drop is not None and aucs and profile["consistency_auc"] is not None:
        ref_auc = median(aucs)
        out["reference"]["consistency_auc"] = round(ref_auc, 6)
        drop = ref_auc - profile["consistency_auc"]
        if drop > settings.max_consistency_drop:
            out["anomalies"].append((LABEL_CONSISTENCY_LOW, (
                f"label {settings.label_field!r} is predicted from this window's features with AUC "
                f"{profile['consistency_auc']:.3f} vs {ref_auc:.3f} (median of {names}): drop {drop:.3f} exceeds "
                f"validation.labels.max_consistency_drop {settings.max_consistency_drop}; labels shuffled or "
                f"partly flipped look like this")))
    return out
