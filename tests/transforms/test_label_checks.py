"""Label checks of validation (transforms/label_checks.py): pure functions on synthetic windows.

The probe's out-of-fold AUC is checked against scikit-learn's logistic regression on the same
design matrix and folds (an independent implementation); the verdicts on flipped, partly flipped
and shuffled labels and on a genuine concept change use pipeline.synthetic. Cost: about 2 s.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from core import storage, window_store
from core.layout import window_dir
from core.records import Event
from pipeline import synthetic
from transforms.arrow import events_to_record_batch
from transforms.label_checks import (
    LABEL_CONSISTENCY_LOW,
    LABEL_MEAN_SHIFT,
    Candidate,
    LabelCheckSettings,
    _design,
    check_labels,
    choose_references,
    consistency_auc,
    feature_drift,
    label_profile,
)
from transforms.validate_windows import merge_candidates, stored_label_candidates

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


def _manifest(root, wid, verdict, profile, drift=None, regime=None, version=1):
    path = storage.join(window_dir(root, wid, version), "MANIFEST.json")
    storage.write_json_atomic(path, {"window_id": wid, "version": version,
                                     "validation": {"verdict": verdict, "reasons": []},
                                     "quality": {"labels": {"profile": profile, "regime": {"start": regime}},
                                                 "drift": {"against": None, "features": drift or {}}}})


def _p(rate, auc=0.8):
    return {"rows": 600, "positive_rate": rate, "consistency_auc": auc}


def _w(h):
    return (DAY + dt.timedelta(hours=h)).strftime("%Y%m%dT%H%MZ")


TEMPERATURE_DRIFT = {"temperature": {"metric": "js", "score": 0.4, "threshold": 0.1},
                     "humidity": {"metric": "js", "score": 0.01, "threshold": 0.1}}


def _choose(root, h, own_drift=(), in_run=()):
    earlier = merge_candidates(list(in_run), stored_label_candidates(root, _w(h), SETTINGS,
                                                                     frozenset(c.window_id for c in in_run)))
    return choose_references(_w(h), own_drift, None, earlier, SETTINGS)


def test_references_skip_quarantined_windows_and_this_run_wins(tmp_path):
    root = str(tmp_path)
    _manifest(root, _w(0), "PASS", _p(0.4))
    _manifest(root, _w(1), "QUARANTINED", _p(0.9))
    _manifest(root, _w(2), "WARN", _p(0.41))
    chosen = _choose(root, 3)
    assert [w for w, _ in chosen["positive_rate"]] == [_w(2), _w(0)] == [w for w, _ in chosen["consistency_auc"]]
    assert chosen["regime"]["start"] is None
    # this run's windows replace the stored version of the same id; a later one is no reference
    run = [Candidate(_w(2), _p(0.45), True), Candidate(_w(4), _p(0.1), True)]
    chosen = _choose(root, 3, in_run=[c for c in run if c.window_id < _w(3)])
    assert chosen["positive_rate"] == [(_w(2), _p(0.45)), (_w(0), _p(0.4))]
    # a released window is a reference again
    storage.write_json_atomic(storage.join(window_dir(root, _w(1), 1), window_store.RELEASE),
                              {"reason": "reviewed", "by": "test"})
    assert [w for w, _ in _choose(root, 3)["positive_rate"]] == [_w(2), _w(1), _w(0)]


def test_a_feature_drift_starts_a_regime_and_the_rate_is_compared_within_it(tmp_path):
    """+15 temperature moves the label rate 0.4 -> 0.7 for good: the drift window (QUARANTINED by the
    drift) starts a regime; the window after it gets no rate check (said so, consistency against
    the windows before); from the next one on the rate is compared with the new regime only."""
    root = str(tmp_path)
    for h in range(3):
        _manifest(root, _w(h), "PASS", _p(0.4))
    own = feature_drift(TEMPERATURE_DRIFT, SETTINGS)
    assert own == (("temperature", 0.4, 0.1),)
    at_drift = _choose(root, 3, own_drift=own)
    assert at_drift["regime"]["start"] == _w(3) and "temperature 0.400 > 0.1" in at_drift["regime"]["why"]
    assert at_drift["positive_rate"] == [] and [w for w, _ in at_drift["consistency_auc"]] == [_w(2), _w(1), _w(0)]
    result = check_labels(_p(0.7), at_drift, SETTINGS)
    assert result["anomalies"] == [] and "starts a new regime" in result["references"]["positive_rate"]["why"]
    _manifest(root, _w(3), "QUARANTINED", _p(0.7), TEMPERATURE_DRIFT, regime=_w(3))

    first = _choose(root, 4)
    assert first["regime"]["start"] == _w(3) and first["positive_rate"] == []
    result = check_labels(_p(0.71), first, SETTINGS)
    assert result["anomalies"] == [] and result["skipped"] is None
    assert result["references"]["consistency_auc"]["windows"] == [_w(2), _w(1), _w(0)]
    assert "no usable window yet in the regime that started at " + _w(3) in result["references"]["positive_rate"]["why"]
    # ... but a shuffled label there is still caught by the consistency check
    assert [k for k, _ in check_labels(_p(0.7, auc=0.5), first, SETTINGS)["anomalies"]] == [LABEL_CONSISTENCY_LOW]
    _manifest(root, _w(4), "PASS", _p(0.71), regime=_w(3))

    for h in range(5, 9):  # the new regime's windows are compared with the new regime only
        chosen = _choose(root, h)
        result = check_labels(_p(0.69), chosen, SETTINGS)
        assert result["anomalies"] == [], h
        assert result["reference_windows"] == [_w(i) for i in range(h - 1, 3, -1)][:3]
        # once 3 windows of the regime are found before its start is reached, the start is the one
        # the nearest window recorded
        assert result["regime"]["start"] == _w(3), h
        assert ("continues the regime of " + _w(h - 1)) in result["regime"]["why"] or h < 7
        _manifest(root, _w(h), "PASS", _p(0.69), regime=_w(3))
    # and a flip of the new regime's label (0.7 -> 0.3) is flagged against it
    flipped = check_labels(_p(0.3), _choose(root, 9), SETTINGS)
    assert [k for k, _ in flipped["anomalies"]] == [LABEL_MEAN_SHIFT]
    assert "median of " + ", ".join(_w(i) for i in (8, 7, 6)) in flipped["anomalies"][0][1]


def test_a_flip_with_no_feature_drift_is_flagged_every_time(tmp_path):
    """Flips never start a regime (the label's own drift does not count): every flipped window of a
    stationary store is compared with the clean windows before it, and the flipped ones, being
    QUARANTINED, are never references."""
    root = str(tmp_path)
    label_drift = {"label": {"metric": "js", "score": 0.9, "threshold": 0.1},
                   "id": {"metric": "linf", "score": 1.0, "threshold": 0.15}}
    assert feature_drift(label_drift, SETTINGS) == ()
    _manifest(root, _w(0), "PASS", _p(0.4))
    for h in range(1, 12):
        flip = h % 3 == 0
        result = check_labels(_p(0.6 if flip else 0.41), _choose(root, h), SETTINGS)
        assert [k for k, _ in result["anomalies"]] == ([LABEL_MEAN_SHIFT] if flip else []), h
        assert result["regime"]["start"] is None
        _manifest(root, _w(h), "QUARANTINED" if flip else "PASS", _p(0.6 if flip else 0.41),
                  label_drift if flip else None)


def test_an_in_run_window_by_its_verdict_and_reading_the_store_lazily(tmp_path):
    root = str(tmp_path)
    for h in range(20):
        _manifest(root, _w(h), "PASS", _p(0.4))
    earlier = stored_label_candidates(root, _w(20), SETTINGS)
    read = []

    def counting():
        for c in earlier:
            read.append(c.window_id)
            yield c

    chosen = choose_references(_w(20), (), None, counting(), SETTINGS)
    assert len(chosen["positive_rate"]) == 3 and read == [_w(19), _w(18), _w(17)]
    run = [Candidate(_w(21), _p(0.6), False), Candidate(_w(22), _p(0.4), True)]
    merged = list(merge_candidates(run, stored_label_candidates(root, _w(23), SETTINGS, frozenset())))
    assert [c.window_id for c in merged[:4]] == [_w(22), _w(21), _w(19), _w(18)]
    chosen = choose_references(_w(23), (), None, iter(merged), SETTINGS)
    assert [w for w, _ in chosen["positive_rate"]] == [_w(22), _w(19), _w(18)]
