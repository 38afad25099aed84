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

Which windows are the references follows **regimes** (:func:`choose_references`): a window in
which a feature other than the label drifted (its drift score against the window before it
above the threshold, as recorded in ``quality.drift``) starts a new regime. The positive rate is
compared only with usable windows of the same regime, since a genuine feature drift may move the
label's rate for good (the synthetic label depends on temperature); the first windows of a regime,
before any of its windows is usable, get no positive-rate check and are compared for consistency
with the windows before the regime (consistency does not depend on which relation holds). A
flipped label with no feature drift starts no regime, so it is always compared with the windows
before it.

Pure functions over an Arrow RecordBatch in the TFXIO convention (every column a large_list);
the sealing composite computes the profile per window and the validator decides
(transforms/validate_windows.py). No TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Iterable, Mapping, Optional

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


@dataclass(frozen=True)
class Candidate:
    """An earlier window as the reference choice sees it."""

    window_id: str
    profile: Optional[dict]
    usable: bool
    """Training may use it (not QUARANTINED, or released)."""
    drift: tuple = ()
    """((feature, score, threshold), ...): features other than the label whose drift against the
    window before it exceeded the threshold; non-empty: this window starts a regime."""
    against: Optional[str] = None
    """The window its drift was measured against."""
    regime: Optional[str] = None
    """The start of the regime recorded for it (``quality.labels.regime.start``); None: the
    store's first regime, or not recorded."""


def feature_drift(drift_scores: dict, settings: LabelCheckSettings) -> tuple:
    """The drifted features of ``quality.drift.features`` ({feature: {metric, score, threshold}}):
    ((feature, score, threshold), ...) sorted, the label itself left out (a flipped label moves the
    label's own distribution; it must not start a regime)."""
    out = []
    for name, s in sorted((drift_scores or {}).items()):
        if name == settings.label_field or name in settings.exclude:
            continue
        if s.get("score") is not None and s.get("threshold") is not None and s["score"] > s["threshold"]:
            out.append((name, s["score"], s["threshold"]))
    return tuple(out)


def _drift_text(window_id: str, drift: tuple, against: Optional[str]) -> str:
    features = ", ".join(f"{f} {score:.3f} > {threshold}" for f, score, threshold in drift)
    return f"feature drift in {window_id} against {against or 'the window before it'}: {features}"


def choose_references(window_id: str, own_drift: tuple, own_against: Optional[str], earlier: Iterable[Candidate],
                      settings: LabelCheckSettings) -> dict:
    """The reference windows of ``window_id`` for each check, from ``earlier`` (newest first; read
    lazily, so a caller may pass a generator over the store).

    The window's regime starts at the newest window (itself included) whose features drifted.
    ``positive_rate`` references: the ``reference_windows`` nearest usable windows of the regime;
    none while the regime has no usable window. ``consistency_auc`` references: the same, or, when
    the regime has none yet, the nearest usable windows before it. Returns {"regime": {"start",
    "why"}, "positive_rate": [(window_id, profile)], "consistency_auc": [...], "why": {check: text}}."""
    n = settings.reference_windows
    in_regime, before = [], []
    start = (window_id, own_drift, own_against) if own_drift else None
    inherited = None  # the regime recorded by the nearest earlier window, when no drift is met
    for c in earlier:
        if start is None:
            if inherited is None:
                inherited = (c.window_id, c.regime)
            if c.usable and c.profile:
                in_regime.append((c.window_id, c.profile))
            if c.drift:
                start = (c.window_id, c.drift, c.against)
            if len(in_regime) >= n:
                break
        else:
            if in_regime:
                break
            if c.usable and c.profile:
                before.append((c.window_id, c.profile))
            if len(before) >= n:
                break
    if start is not None:
        regime = {"start": start[0], "why": _drift_text(*start)}
    elif inherited is None:
        regime = {"start": None, "why": "the store's first window: no earlier window"}
    elif inherited[1] is None or (in_regime and inherited[1] > in_regime[-1][0]):
        # the nearest windows were read and none drifted; a recorded start newer than the oldest
        # reference would contradict that (a store sealed under other drift thresholds): not trusted
        regime = {"start": None, "why": f"no feature drift detected (the nearest earlier window, {inherited[0]}, "
                                        f"records no regime start either)"}
    else:
        regime = {"start": inherited[1], "why": f"continues the regime of {inherited[0]} (recorded in its manifest)"}
    why = {}
    if in_regime:
        why["positive_rate"] = why["consistency_auc"] = f"the {len(in_regime)} nearest usable windows of this regime"
    else:
        if start is None:
            why["positive_rate"] = "no earlier usable window"
        elif start[0] == window_id:
            why["positive_rate"] = "this window starts a new regime (feature drift): no window of it to compare with"
        else:
            why["positive_rate"] = (f"no usable window yet in the regime that started at {start[0]} (feature drift); "
                                    f"the positive rate is checked once one is")
        why["consistency_auc"] = (f"the {len(before)} nearest usable windows before the regime started"
                                  if before else "no earlier usable window")
    return {"regime": regime, "positive_rate": in_regime, "consistency_auc": in_regime or before, "why": why}


def check_labels(profile: Optional[dict], references, settings: LabelCheckSettings) -> dict:
    """The checks of ``profile`` against ``references``: a :func:`choose_references` result, or a
    list ((window_id, profile), newest first) used for both checks.

    Returns {"reference_windows" (every window compared with, newest first), "references": {check:
    {"windows", "why"}}, "regime", "reference" (the medians), "anomalies": [(kind, description)],
    "skipped": reason|None}."""
    if not isinstance(references, Mapping):
        references = {"regime": None, "positive_rate": list(references), "consistency_auc": list(references),
                      "why": {"positive_rate": "given", "consistency_auc": "given"}}
    chosen = {check: [(wid, p) for wid, p in references[check] if p][:settings.reference_windows]
              for check in ("positive_rate", "consistency_auc")}
    compared = sorted({wid for refs in chosen.values() for wid, _ in refs}, reverse=True)
    out = {"reference_windows": compared, "regime": references["regime"],
           "references": {check: {"windows": [wid for wid, _ in refs], "why": references["why"][check]}
                          for check, refs in chosen.items()},
           "reference": {}, "anomalies": [], "skipped": None}
    if profile is None:
        out["skipped"] = f"no {settings.label_field!r} column in this window"
        return out
    if profile["rows"] < settings.min_rows:
        out["skipped"] = (f"{profile['rows']} labelled rows, fewer than validation.labels.min_rows "
                          f"{settings.min_rows}")
        return out
    if not compared:
        out["skipped"] = "no earlier window usable for training to compare with (the first window is not checked)"
        return out
    refs = chosen["positive_rate"]
    names = ", ".join(wid for wid, _ in refs)
    rates = [p["positive_rate"] for _, p in refs if p.get("positive_rate") is not None]
    if settings.max_mean_shift is not None and rates and profile["positive_rate"] is not None:
        ref_rate = median(rates)
        out["reference"]["positive_rate"] = round(ref_rate, 6)
        shift = profile["positive_rate"] - ref_rate
        if abs(shift) > settings.max_mean_shift:
            out["anomalies"].append((LABEL_MEAN_SHIFT, (
                f"label {settings.label_field!r} positive rate {profile['positive_rate']:.3f} vs {ref_rate:.3f} "
                f"(median of {names}, same regime): shift {shift:+.3f} exceeds validation.labels.max_mean_shift "
                f"{settings.max_mean_shift}; with no feature drift since those windows this is the mark of "
                f"inverted labels")))
    refs = chosen["consistency_auc"]
    names = ", ".join(wid for wid, _ in refs)
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
