"""Label checks of validation (transforms/label_checks.py): pure functions on synthetic windows.

The probe's out-of-fold AUC is checked against scikit-learn's logistic regression on the same
design matrix and folds (an independent implementation); the verdicts on flipped, partly flipped
and shuffled labels and on a genuine concept change use pipeline.synthetic. Cost: about 2 s.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from core import storage
from core.layout import window_dir
from core.records import Event
from pipeline import synthetic
from transforms.arrow import events_to_record_batch
from transforms.label_checks import (
    LABEL_CONSISTENCY_LOW,
    LABEL_MEAN_SHIFT,
    LabelCheckSettings,
    _design,
    check_labels,
    consistency_auc,
    label_profile,
)
from transforms.validate_windows import merge_label_references, stored_label_references

TYPES = {"device_id": "BYTES", "firmware": "BYTES", "temperature": "FLOAT", "vibration": "FLOAT",
         "humidity": "FLOAT", "label": "INT", "id": "BYTES", "ts": "BYTES"}
SETTINGS = LabelCheckSettings("label", ("id", "ts"))
DAY = dt.datetime(2026, 11, 27)


def batch(events):
    return events_to_record_batch([Event(e["id"], 0, e, "test", str(i)) for i, e in enumerate(events)], TYPES)


def hour(h, change_every=0, corrupt=None, rows=600, seed=5):
    return [e for _, e in synthetic.drift_stream(DAY, 1, rows, change_every=change_every, seed=seed,
                                                 first_hour=h, corrupt={h: corrupt} if corrupt else None)]


@pytest.fixture(scope="module")
def references():
    return [(f"w{h}", label_profile(batch(hour(h)), SETTINGS)) for h in (2, 1, 0)]


def test_probe_matches_scikit_learn_on_the_same_folds():
    from sklearn.linear_model import LogisticRegression

    events = hour(0)
    data = batch(events)
    rows = np.arange(len(events))
    x = _design(data, rows, SETTINGS)
    y = np.array([e["label"] for e in events], dtype=float)
    folds = rows % 2
    scores = np.empty(len(y))
    for k in (0, 1):
        # sklearn penalises the intercept column too unless it is left out: fit_intercept on x[:, 1:]
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x[folds != k, 1:], y[folds != k])
        scores[folds == k] = model.decision_function(x[folds == k, 1:])
    from sklearn.metrics import roc_auc_score

    assert consistency_auc(x, y) == pytest.approx(roc_auc_score(y, scores), abs=0.01)


def test_clean_windows_and_a_genuine_concept_change_pass(references):
    for h in (3, 4):
        clean = check_labels(label_profile(batch(hour(h)), SETTINGS), references, SETTINGS)
        assert clean["anomalies"] == [] and clean["skipped"] is None
    # hour 4 of a stream changing concept every 4 hours: a new relation, as learnable as the old
    changed = label_profile(batch(hour(4, change_every=4)), SETTINGS)
    assert changed["consistency_auc"] > 0.7
    assert check_labels(changed, references, SETTINGS)["anomalies"] == []


@pytest.mark.parametrize("kind,expected", [
    ("flip", [LABEL_MEAN_SHIFT]),            # 40% positives -> 60%; consistency unchanged
    ("partial_flip", [LABEL_CONSISTENCY_LOW]),
    ("shuffle", [LABEL_CONSISTENCY_LOW]),
])
def test_corrupted_labels_are_reported(references, kind, expected):
    profile = label_profile(batch(hour(3, corrupt=kind)), SETTINGS)
    result = check_labels(profile, references, SETTINGS)
    assert [k for k, _ in result["anomalies"]] == expected
    assert result["reference_windows"] == ["w2", "w1", "w0"]
    assert "median of w2, w1, w0" in result["anomalies"][0][1]


def test_a_flip_of_a_balanced_label_moves_no_rate_and_is_left_to_the_gate():
    refs = [(f"w{h}", label_profile(batch(hour(h, change_every=1)), SETTINGS)) for h in (3, 1)]  # concept 1
    flipped = label_profile(batch(hour(5, change_every=1, corrupt="flip")), SETTINGS)
    assert check_labels(flipped, refs, SETTINGS)["anomalies"] == []  # the screening catches this one


def test_nothing_to_compare_with_is_said_not_hidden(references):
    profile = label_profile(batch(hour(0)), SETTINGS)
    assert "no earlier window" in check_labels(profile, [], SETTINGS)["skipped"]
    few = label_profile(batch(hour(0, rows=50)), SETTINGS)
    assert few["consistency_auc"] is None
    assert "fewer than validation.labels.min_rows 100" in check_labels(few, references, SETTINGS)["skipped"]
    unlabelled = events_to_record_batch([Event("a", 0, {"temperature": 1.0}, "t", "0")], {"temperature": "FLOAT"})
    assert label_profile(unlabelled, SETTINGS) is None
    assert "no 'label' column" in check_labels(None, references, SETTINGS)["skipped"]


def test_missing_values_and_sampling_do_not_break_the_probe():
    events = hour(0, rows=400)
    for e in events[::7]:
        del e["humidity"]
    profile = label_profile(batch(events), SETTINGS)
    assert 0.7 < profile["consistency_auc"] < 0.9 and profile["rows"] == 400


def _manifest(root, wid, verdict, profile):
    path = storage.join(window_dir(root, wid, 1), "MANIFEST.json")
    storage.write_json_atomic(path, {"window_id": wid, "version": 1, "validation": {"verdict": verdict, "reasons": []},
                                     "quality": {"labels": {"profile": profile}}})


def _p(rate):
    return {"rows": 600, "positive_rate": rate, "consistency_auc": 0.8}


def test_references_skip_quarantined_windows_and_this_run_wins(tmp_path):
    root = str(tmp_path)
    _manifest(root, "20261127T0000Z", "PASS", _p(0.4))
    _manifest(root, "20261127T0100Z", "QUARANTINED", _p(0.9))
    _manifest(root, "20261127T0200Z", "WARN", _p(0.41))
    stored = stored_label_references(root, "20261127T0300Z", 3)
    assert [w for w, _ in stored] == ["20261127T0200Z", "20261127T0000Z"]
    merged = merge_label_references(stored, {"20261127T0200Z": _p(0.45), "20261127T0400Z": _p(0.1)},
                                    "20261127T0300Z", SETTINGS, (LABEL_MEAN_SHIFT,))
    assert merged == [("20261127T0200Z", _p(0.45)), ("20261127T0000Z", _p(0.4))]


def test_a_flipped_window_of_the_same_run_is_no_reference_for_the_clean_ones_after_it():
    stored = [("20261127T0200Z", _p(0.4)), ("20261127T0100Z", _p(0.4)), ("20261127T0000Z", _p(0.4))]
    run = {"20261127T0300Z": _p(0.6), "20261127T0400Z": _p(0.6), "20261127T0500Z": _p(0.4)}
    refs = merge_label_references(stored, run, "20261127T0500Z", SETTINGS, (LABEL_MEAN_SHIFT,))
    assert [w for w, _ in refs] == ["20261127T0200Z", "20261127T0100Z", "20261127T0000Z"]
    assert check_labels(run["20261127T0500Z"], refs, SETTINGS)["anomalies"] == []
    # when the kind is not blocking (WARN only), the flipped windows stay usable, hence references
    warn_only = merge_label_references(stored, run, "20261127T0500Z", SETTINGS, ())
    assert [w for w, _ in warn_only][:2] == ["20261127T0400Z", "20261127T0300Z"]
