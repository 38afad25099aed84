"""Rolling backfills (hour by hour, as a scheduler runs them) train together.

Reproduced before: every backfill analyzed and published its own transform and training kept
only the windows of the newest one, so `ctpipe train` after three hourly backfills trained on the
last hour alone. Now a backfill applies the published transform; and windows sealed under an
earlier transform (after `--analyze-transform`) are transformed at training time.
"""
from __future__ import annotations

import datetime as dt

import pytest
import tensorflow as tf
import tensorflow_transform as tft

from core import window_store
from core.transform_store import current_transform, transform_dir
from pipeline import synthetic
from pipeline.backfill import run_backfill
from pipeline.config import config_from_dict
from pipeline.controller import run_training
from training.data import split_dataset, training_dataset

pytestmark = pytest.mark.slow

START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
HOUR_MS = 3600_000


@pytest.fixture
def rolled(tmp_path, direct_options):
    synthetic.write_jsonl(str(tmp_path / "events"), synthetic.generate(START, 3, 300), rows_per_hour=300)
    config = config_from_dict({
        "storage": {"root": str(tmp_path / "store")},
        "source": {"files": {"uri": str(tmp_path / "events" / "*.jsonl")}},
        "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"},
        "training": {"epochs": 1, "backup_dir": str(tmp_path / "backup")},
    })
    t0 = int(START.timestamp() * 1000)
    for hour in range(3):
        run_backfill(config, direct_options, t0 + hour * HOUR_MS, t0 + (hour + 1) * HOUR_MS)
    return config


def _train_labels(windows, fingerprint, tft_output, spec):
    dataset = training_dataset(windows, "id", 0.2, spec, "label", 64, tft_output=tft_output, fingerprint=fingerprint)
    return sorted(float(v) for _f, labels in dataset for v in labels.numpy())


def _raw_train_labels(windows):
    raw = split_dataset(windows, "id", 0.2, False, "raw")
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    return sorted(float(tf.io.parse_single_example(r, spec)["label"].numpy()) for r in raw)


def test_three_hourly_backfills_train_together(rolled):
    config = rolled
    windows = window_store.list_sealed(config.storage.root)
    assert len(windows) == 3
    assert {w.manifest["transform_fingerprint"] for w in windows} == {current_transform(config.storage.root)}
    outcome = run_training(config)
    assert [w["window_id"] for w in outcome["windows"]] == [w.window_id for w in windows]
    assert all(w["transformed"] == "stored" for w in outcome["windows"])
    assert outcome["train_examples"] == len(_raw_train_labels(windows))


def test_windows_of_an_earlier_transform_are_transformed_at_training_time(rolled, direct_options):
    config = rolled
    root = config.storage.root
    first = current_transform(root)
    # re-analyze over the last hour only: a different analysis, so a new transform is published
    t0 = int(START.timestamp() * 1000)
    run_backfill(config, direct_options, t0 + 2 * HOUR_MS, t0 + 3 * HOUR_MS, analyze_transform=True)
    second = current_transform(root)
    assert second != first
    windows = window_store.list_sealed(root)
    assert [w.manifest["transform_fingerprint"] for w in windows] == [first, first, second]

    tft_output = tft.TFTransformOutput(transform_dir(root, second))
    spec = tft_output.transformed_feature_spec()
    # every training row of all three windows comes out, with its label, under the new transform
    assert _train_labels(windows, second, tft_output, spec) == _raw_train_labels(windows)
    # and the rows of the earlier windows are what the new transform makes of their raw examples
    old = windows[:2]
    raw_spec = tft_output.raw_feature_spec()
    raw = split_dataset(old, "id", 0.2, False, "raw").batch(10_000)
    expected = tft_output.transform_features_layer()(tf.io.parse_example(next(iter(raw)), raw_spec))
    got = next(iter(training_dataset(old, "id", 0.2, spec, "label", 10_000, tft_output=tft_output,
                                     fingerprint=second)))[0]
    name = sorted(k for k in spec if k != "label")[0]
    assert sorted(expected[name].numpy().ravel().tolist()) == sorted(got[name].numpy().ravel().tolist())

    outcome = run_training(config)
    assert outcome["transform_fingerprint"] == second
    assert [w["transformed"] for w in outcome["windows"]] == [
        f"at training time (sealed with {first})", f"at training time (sealed with {first})", "stored"]
    assert outcome["train_examples"] == len(_raw_train_labels(windows))
