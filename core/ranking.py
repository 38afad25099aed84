"""Rank statistics shared by validation (the label-consistency probe) and the evaluation gate."""
from __future__ import annotations

import numpy as np


def auc_score(labels, scores) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged; NaN without both classes."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Average rank of each run of tied scores: runs start where the sorted value changes.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    run_ranks = (starts + ends - 1) / 2.0 + 1
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))
