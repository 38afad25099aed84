"""The gate's screening and trusted-data decisions (training/trust.py), without a model. Cost: < 1 s."""
from __future__ import annotations

import math

from pipeline.config import ScreeningConfig, TrustedDataConfig
from training.trust import COLLAPSE, CONCEPT_CHANGE, OK, screen_decision, trusted_checks

SCREEN = ScreeningConfig()
TRUSTED = TrustedDataConfig()


def test_an_ordinary_window_is_ok():
    d = screen_decision("w v1", 0.78, 0.80, [], SCREEN)
    assert d["decision"] == OK and d["drop"] == 0.02 and d["reasons"] == []


def test_a_large_drop_without_history_is_a_concept_change_and_says_so():
    d = screen_decision("w v1", 0.50, 0.82, [], SCREEN)
    assert d["decision"] == CONCEPT_CHANGE and d["drop"] == 0.32
    assert "no earlier concept change is recorded" in d["reasons"][0]


def test_far_below_chance_collapses_whatever_the_history():
    d = screen_decision("w v1", 0.18, 0.82, [], SCREEN)
    assert d["decision"] == COLLAPSE and "far below chance" in d["reasons"][0]
    assert "windows release" in d["reasons"][0]


def test_a_drop_much_larger_than_past_concept_changes_collapses():
    # past change dropped AUC by 0.15; this drop of 0.42 is more than 2x that, yet AUC 0.40 > 0.3
    d = screen_decision("w v1", 0.40, 0.82, [0.12, 0.15], SCREEN)
    assert d["decision"] == COLLAPSE and "largest drop at a past concept change (0.150)" in d["reasons"][0]
    assert screen_decision("w v1", 0.55, 0.82, [0.15], SCREEN)["decision"] == CONCEPT_CHANGE  # 0.27 < 0.30
    off = ScreeningConfig(collapse_drop_factor=None)
    assert screen_decision("w v1", 0.40, 0.82, [0.15], off)["decision"] == CONCEPT_CHANGE


def test_an_auc_that_cannot_be_computed_is_not_screened():
    d = screen_decision("w v1", float("nan"), 0.82, [], SCREEN)
    assert d["decision"] == OK and "could not be computed" in d["reasons"][0]


def _set(name, cand, prod, n=200):
    return {"name": name, "source": "s", "examples": n, "candidate": {"auc": cand},
            "production": None if prod is None else {"auc": prod}}


def test_no_regression_bound_on_trusted_data():
    ok = trusted_checks([_set("earlier_windows", 0.78, 0.80)], TRUSTED, None)
    assert ok["passed"] and ok["checks"][0]["applied"] and ok["checks"][0]["change"] == -0.02
    bad = trusted_checks([_set("earlier_windows", 0.20, 0.80)], TRUSTED, None)
    assert not bad["passed"] and "change -0.6000" in bad["checks"][0]["description"]


def test_a_concept_change_waives_the_earlier_windows_bound_but_never_the_golden_set():
    sets = [_set("earlier_windows", 0.50, 0.80), _set("golden", 0.79, 0.80)]
    waived = trusted_checks(sets, TRUSTED, "concept change on w v1")
    assert waived["passed"]
    assert waived["checks"][0]["applied"] is False and waived["checks"][0]["waived"] == "concept change on w v1"
    golden_bad = trusted_checks([_set("earlier_windows", 0.5, 0.8), _set("golden", 0.5, 0.8)], TRUSTED, "x")
    assert not golden_bad["passed"]


def test_small_sets_no_production_and_nan_are_handled():
    assert trusted_checks([_set("golden", 0.1, 0.9, n=10)], TRUSTED, None)["passed"]
    assert trusted_checks([_set("golden", 0.1, None)], TRUSTED, None)["checks"][0]["applied"] is False
    assert not trusted_checks([_set("golden", math.nan, 0.8)], TRUSTED, None)["passed"]
