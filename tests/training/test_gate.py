import math

import numpy as np
import pytest

from pipeline.config import ThresholdConfig
from training.evaluate import auc_score, classification_metrics, gate


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + labels * 0.3, 2)  # ties on purpose
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auc_score(labels, scores) == pytest.approx(pairwise)
    assert math.isnan(auc_score(np.ones(4), np.arange(4)))


def test_classification_metrics():
    m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.6, 0.7]))
    assert m["accuracy"] == 0.75 and m["example_count"] == 4 and m["auc"] == 0.75
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.9, 0.6, 0.3])))


THRESHOLDS = (ThresholdConfig(metric="auc", lower_bound=0.7, change_absolute=-0.01),
              ThresholdConfig(metric="log_loss", change_relative=-0.05))


def test_first_run_skips_change_thresholds_and_says_so():
    blessing = gate({"auc": 0.8, "log_loss": 0.5}, None, THRESHOLDS)
    assert blessing["blessed"] and not blessing["baseline_available"]
    skipped = [c for c in blessing["checks"] if c.get("skipped")]
    assert len(skipped) == 2 and all("no production model" in c["description"] for c in skipped)


def test_absolute_bound_rejects():
    blessing = gate({"auc": 0.65, "log_loss": 0.5}, None, THRESHOLDS)
    assert not blessing["blessed"]
    assert [c["kind"] for c in blessing["checks"] if not c["passed"]] == ["lower_bound"]


def test_change_thresholds_respect_direction():
    base = {"auc": 0.80, "log_loss": 0.50}
    assert gate({"auc": 0.795, "log_loss": 0.51}, base, THRESHOLDS)["blessed"]  # within both tolerances
    worse_auc = gate({"auc": 0.78, "log_loss": 0.5}, base, THRESHOLDS)
    assert not worse_auc["blessed"]
    worse_loss = gate({"auc": 0.8, "log_loss": 0.55}, base, THRESHOLDS)  # +10% loss, lower is better
    assert [c["metric"] for c in worse_loss["checks"] if not c["passed"]] == ["log_loss"]


def test_nan_metric_fails_closed():
    assert not gate({"auc": float("nan"), "log_loss": 0.5}, None, THRESHOLDS)["blessed"]
