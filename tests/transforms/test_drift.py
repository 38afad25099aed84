"""Injected drift is flagged in the window where it starts and in no other; stationary data gives
no false alarms with the default thresholds. Real backfills (DirectRunner, TFDV, TFT) on small data."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from core import window_store
from pipeline import synthetic
from pipeline.backfill import columns_of_records, infer_and_store_schema, run_backfill
from pipeline.config import config_from_dict
from pipeline.options import pipeline_options

pytestmark = pytest.mark.slow
from transforms.sources import ReadEventFiles

START = dt.datetime(2026, 11, 27)
HOURS, ROWS = 24, 300
SHIFT_HOUR, NEW_CATEGORY_HOUR, DROPPED_HOUR, TYPE_CHANGE_HOUR = 5, 10, 14, 19


def _config(tmp, name, **validation):
    return config_from_dict({"storage": {"root": os.path.join(tmp, name, "store")},
                             "source": {"files": {"uri": os.path.join(tmp, name, "in", "*.jsonl")}},
                             "validation": validation})


def _write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        for line in lines:
            handle.write(line + b"\n")


def _hour_events(hour, mean_shift=0.0):
    start = START + dt.timedelta(hours=hour)
    return [ev for _line, ev in synthetic.generate(start, 1, ROWS, seed=100 + hour, malformed_per_hour=0,
                                                   out_of_range_per_hour=0, first_index=hour * 10_000,
                                                   mean_shift_from_hour=0 if mean_shift else None,
                                                   mean_shift=mean_shift)]


def _inject(hour, events):
    """The drifts: a persistent mean shift of temperature from SHIFT_HOUR; and, in one window each,
    a new firmware category, humidity dropped (from half the records: a producer rolling out a
    change; a window without any valid record is never sealed, its records are all dead letters),
    temperature turned into a string."""
    for i, ev in enumerate(events):
        if hour == NEW_CATEGORY_HOUR and i % 4 == 0:
            ev["firmware"] = "v9-beta"
        if hour == DROPPED_HOUR and i % 2 == 0:
            ev.pop("humidity")
        if hour == TYPE_CHANGE_HOUR and i % 5 == 0:
            ev["temperature"] = f"{ev['temperature']}C"
    return events


@pytest.fixture(scope="module")
def options():
    return pipeline_options("runner_configs/direct.yaml")


@pytest.fixture(scope="module")
def stationary(tmp_path_factory, options):
    tmp = str(tmp_path_factory.mktemp("stationary"))
    config = _config(tmp, "s")
    lines = [line for line, _ev in synthetic.generate(START, HOURS, ROWS, seed=11)]
    _write(os.path.join(tmp, "s", "in", "events.jsonl"), lines)
    run_backfill(config, options, None, None)
    return config


def _drifted_store(tmp_path_factory, options, name, blocks):
    """The drifted stream backfilled block by block (``blocks``: lists of hours, one run each)."""
    tmp = str(tmp_path_factory.mktemp(name))
    _write(os.path.join(tmp, "clean", "in", "events.jsonl"),
           [json.dumps(ev, sort_keys=True).encode() for h in range(3) for ev in _hour_events(h)])
    # Label checks on, with the default blocking kinds (LABEL_MEAN_SHIFT among them): the temperature
    # shift moves the synthetic label's rate for good, and the shift window starts a new regime of
    # label references (docs/GATE.md), so no later window is flagged for its label rate.
    config = _config(tmp, "d")
    assert "LABEL_MEAN_SHIFT" in config.validation.blocking_anomalies
    # The curated schema comes from clean data (as `ctpipe schema infer` on reviewed windows would).
    clean_files = [os.path.join(tmp, "clean", "in", "events.jsonl")]
    infer_and_store_schema(config, options,
                           lambda p, spec: columns_of_records(p | ReadEventFiles(clean_files, "jsonl"), spec),
                           "the clean data")
    for block in blocks:
        lines = []
        for hour in block:
            events = _hour_events(hour, mean_shift=15.0 if hour >= SHIFT_HOUR else 0.0)
            lines += [json.dumps(ev, sort_keys=True).encode() for ev in _inject(hour, events)]
        _write(os.path.join(tmp, "d", "in", f"events-{block[0]:02d}.jsonl"), lines)
        run_backfill(config, options, None, None)
    return config


@pytest.fixture(scope="module")
def drifted(tmp_path_factory, options):
    return _drifted_store(tmp_path_factory, options, "drifted", [list(range(HOURS))])


def _windows(config):
    windows = window_store.list_sealed(config.storage.root)
    assert len(windows) == HOURS
    return windows


def test_stationary_data_gives_no_false_alarms_over_24_windows(stationary):
    windows = _windows(stationary)
    flagged = {w.window_id: w.manifest["validation"]["reasons"] for w in windows if w.verdict != "PASS"}
    assert flagged == {}
    # Drift scores are numbers for every window after the first, well under the thresholds.
    for w in windows[1:]:
        scores = w.manifest["quality"]["drift"]["features"]
        assert set(scores) == {"device_id", "firmware", "humidity", "label", "temperature", "vibration"}
        assert all(s["score"] is not None and s["score"] < s["threshold"] for s in scores.values())


def test_each_injected_drift_is_flagged_where_it_starts_and_nowhere_else(drifted):
    windows = _windows(drifted)
    flagged = {i for i, w in enumerate(windows) if w.verdict != "PASS"}
    assert flagged == {SHIFT_HOUR, NEW_CATEGORY_HOUR, DROPPED_HOUR, TYPE_CHANGE_HOUR}, {
        i: windows[i].manifest["validation"]["reasons"] for i in flagged}
    assert all(windows[i].verdict == "QUARANTINED" for i in flagged)

    def reasons(hour):
        return " | ".join(windows[hour].manifest["validation"]["reasons"])

    assert "'temperature': COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH" in reasons(SHIFT_HOUR)
    shift = windows[SHIFT_HOUR].manifest["quality"]["drift"]["features"]["temperature"]
    assert shift["score"] > shift["threshold"]
    after = windows[SHIFT_HOUR + 1].manifest["quality"]["drift"]["features"]["temperature"]
    assert after["score"] < after["threshold"]

    new_category = windows[NEW_CATEGORY_HOUR].manifest["quality"]
    assert new_category["dead_letter_reasons"] == {"domain_violation": ROWS // 4}
    assert "dead-lettered" in reasons(NEW_CATEGORY_HOUR)

    assert windows[DROPPED_HOUR].manifest["quality"]["dead_letter_reasons"] == {"missing_feature": ROWS // 2}

    type_change = windows[TYPE_CHANGE_HOUR].manifest["quality"]
    assert type_change["dead_letter_reasons"] == {"type_mismatch": ROWS // 5}
    assert type_change["validity"] == pytest.approx(0.8)


def test_the_feature_drift_starts_a_label_regime_and_training_data_keeps_coming(drifted):
    """The shift moves the label's positive rate for good (the synthetic label rises with
    temperature): the windows after the shift are compared with windows after the shift, none is
    flagged for its labels, and every window after the shift hour but the other injected ones is
    usable for training."""
    windows = _windows(drifted)
    labels = [w.manifest["quality"]["labels"] for w in windows]
    rates = [lab["profile"]["positive_rate"] for lab in labels]
    before, after = sum(rates[:SHIFT_HOUR]) / SHIFT_HOUR, sum(rates[SHIFT_HOUR:]) / (HOURS - SHIFT_HOUR)
    assert after - before > 0.15, (before, after)  # a blocking rate check against the old regime would fire
    assert all(not lab["anomalies"] for lab in labels), [(i, lab["anomalies"]) for i, lab in enumerate(labels)]
    assert [i for i, w in enumerate(windows) if not w.usable_for_training] == [
        SHIFT_HOUR, NEW_CATEGORY_HOUR, DROPPED_HOUR, TYPE_CHANGE_HOUR]

    ids = [w.window_id for w in windows]
    for i in range(SHIFT_HOUR):
        assert labels[i]["regime"]["start"] is None, i
    shift = labels[SHIFT_HOUR]
    assert shift["regime"]["start"] == ids[SHIFT_HOUR] and "temperature" in shift["regime"]["why"]
    assert shift["references"]["positive_rate"]["windows"] == []
    # the first window of the regime: no usable window of it yet (the shift window is QUARANTINED),
    # so no rate check; consistency against the windows before the shift
    first = labels[SHIFT_HOUR + 1]
    assert first["regime"]["start"] == ids[SHIFT_HOUR] and first["skipped"] is None
    assert first["references"]["positive_rate"]["windows"] == [] and "positive_rate" not in first["reference"]
    assert first["references"]["consistency_auc"]["windows"] == ids[SHIFT_HOUR - 1:SHIFT_HOUR - 4:-1]
    assert "consistency_auc" in first["reference"]
    for i in range(SHIFT_HOUR + 2, HOURS):  # then the new regime's usable windows only
        refs = labels[i]["references"]["positive_rate"]["windows"]
        assert refs and all(ids[SHIFT_HOUR] < r < ids[i] and windows[ids.index(r)].usable_for_training
                            for r in refs), (i, refs)
        assert labels[i]["references"]["consistency_auc"]["windows"] == refs
        assert labels[i]["regime"]["start"] == ids[SHIFT_HOUR], (i, labels[i]["regime"])
        assert abs(labels[i]["reference"]["positive_rate"] - rates[i]) < 0.15


def test_one_run_and_block_by_block_choose_the_same_label_references(tmp_path_factory, options, drifted):
    """The references of this run's windows are chosen by the verdicts they will get, so sealing the
    stream in one run and in four (the shift window last of its run, the regime's first window alone)
    records the same regimes, references and verdicts."""
    blocks = [list(range(0, SHIFT_HOUR + 1)), [SHIFT_HOUR + 1], list(range(SHIFT_HOUR + 2, 13)),
              list(range(13, HOURS))]
    stepwise = _windows(_drifted_store(tmp_path_factory, options, "stepwise", blocks))
    for one, step in zip(_windows(drifted), stepwise):
        assert one.window_id == step.window_id and one.verdict == step.verdict, one.window_id
        assert one.manifest["quality"]["labels"] == step.manifest["quality"]["labels"], one.window_id
