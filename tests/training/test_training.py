"""Backfill -> train -> registry on DirectRunner and CPU (small data)."""
import os

import numpy as np
import pytest
import tensorflow as tf

from core import window_store
from pipeline.backfill import run_backfill
from pipeline.controller import run_training
from training.data import raw_eval_examples
from training.registry import open_registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import datetime as dt

    from pipeline import synthetic
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    base = tmp_path_factory.mktemp("train")
    synthetic.write_jsonl(str(base / "events"), synthetic.generate(dt.datetime(2026, 11, 27), 4, 800),
                          rows_per_hour=803)
    config = config_from_dict({
        "storage": {"root": str(base / "store")},
        "source": {"files": {"uri": str(base / "events" / "*.jsonl")}},
        "registry": {"uri": str(base / "registry"), "model_name": "sensors"},
        "training": {"epochs": 4, "backup_dir": str(base / "backup")},
    })
    options = pipeline_options(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "runner_configs",
                                            "direct.yaml"))
    run_backfill(config, options, None, None)
    first = run_training(config)
    return config, first


def test_first_candidate_is_blessed_pushed_and_promoted(trained):
    config, first = trained
    assert first["blessing"]["blessed"] and first["pushed"] and first["version"] == 1
    assert first["metrics"]["auc"] > 0.7  # the synthetic label is learnable
    assert not first["warm_start"]["used"]
    registry = open_registry(config.registry.uri)
    assert registry.get_alias("sensors", "production") == 1
    lineage = registry.get("sensors", 1).lineage
    assert [w["window_id"] for w in lineage["windows"]] == [w.window_id for w in window_store.list_sealed(
        config.storage.root)]
    assert lineage["transform_fingerprint"] == first["transform_fingerprint"]
    assert lineage["schema_version"] == 1 and lineage["config_hash"] and lineage["code_version"]


def test_lineage_has_inputs_code_metrics_duration_and_warm_start(trained):
    from core import storage
    from core.version import code_version
    from pipeline.controller import config_hash

    config, first = trained
    stored = open_registry(config.registry.uri).get("sensors", 1)
    lineage = stored.lineage
    windows = window_store.list_sealed(config.storage.root)
    assert [(w["window_id"], w["version"], w["content_digest"]) for w in lineage["windows"]] == [
        (w.window_id, w.version, w.manifest["content_digest"]) for w in windows]
    assert lineage["schema_version"] == windows[-1].manifest["schema_version"]
    assert lineage["config_hash"] == config_hash(config) and lineage["code_version"] == code_version()
    assert lineage["metrics"] == stored.metrics == first["metrics"]
    assert lineage["training_duration_s"] == lineage["training"]["training_seconds"] > 0
    assert lineage["warm_start"] == {"used": False, "reason": "no production model"}
    assert lineage["training"]["epochs_run"] == config.training.epochs and lineage["training"]["resumed_from_epoch"] == 0
    assert lineage["eval_windows"] == [f"{windows[-1].window_id} v{windows[-1].version}"]
    # The run record holds the same lineage, also for candidates that are not pushed.
    record = storage.read_json(storage.join(config.storage.root, "runs", f"{first['run_id']}.json"))
    assert record["lineage"] == lineage


def test_serving_signature_takes_raw_examples_without_label(trained, tmp_path):
    config, _first = trained
    registry = open_registry(config.registry.uri)
    model_dir = registry.fetch("sensors", 1, str(tmp_path / "m"))
    windows = window_store.list_sealed(config.storage.root)
    raw = raw_eval_examples(windows[-1:], "id", 0.2)[:50]
    stripped = []
    for serialized in raw:
        example = tf.train.Example.FromString(serialized)
        for name in ("label", "id", "ts"):
            del example.features.feature[name]
        stripped.append(example.SerializeToString())
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    probs = serve(examples=tf.constant(stripped))["probability"].numpy().reshape(-1)
    assert probs.shape == (len(stripped),) and np.all((probs >= 0) & (probs <= 1))


def test_second_candidate_warm_starts_and_is_compared_with_production(trained):
    config, first = trained
    again = run_training(config)  # the same inputs: a retry, nothing trained, nothing pushed
    assert again["reused"] and again["version"] == 1 and again["run_id"] == first["run_id"]
    assert [v.version for v in open_registry(config.registry.uri).list_versions("sensors")] == [1]
    # another configuration (one more epoch) makes another run: it trains, warm-started
    second = run_training(config.replace(training=config.training.replace(epochs=config.training.epochs + 1)))
    assert second["warm_start"]["used"], second["warm_start"]
    assert second["baseline_version"] == 1
    change_checks = [c for c in second["blessing"]["checks"] if c["kind"] == "change_absolute"]
    assert change_checks and all(not c.get("skipped") for c in change_checks)
    assert second["lineage"]["warm_start"]["used"] and second["lineage"]["baseline_version"] == 1
    assert second["blessing"]["baseline_metrics"]["example_count"] == second["metrics"]["example_count"]


def test_split_keeps_raw_and_transformed_rows_aligned(trained):
    """The split is computed a batch at a time on raw ids and applied to the transformed rows:
    both sides must still be the same rows (the labels line up) and the splits partition the data."""
    from training.data import split_dataset

    config, _first = trained
    windows = window_store.list_sealed(config.storage.root)

    def labels(dataset):
        return [tf.train.Example.FromString(x).features.feature["label"].int64_list.value[0]
                for x in dataset.as_numpy_iterator()]

    sizes = {}
    for want_eval in (True, False):
        raw = labels(split_dataset(windows, "id", 0.2, want_eval, "raw"))
        transformed = labels(split_dataset(windows, "id", 0.2, want_eval, "transformed"))
        assert raw == transformed and 0 < sum(raw) < len(raw)
        sizes[want_eval] = len(raw)
    total = sum(w.manifest["record_count"] for w in windows)
    assert sizes[True] + sizes[False] == total and 0.15 < sizes[True] / total < 0.25


def test_split_from_masks_selects_the_rows_the_ids_select(trained):
    """Masks computed once (eval_masks) pick the same rows, in the same order, as parsing every
    raw id again: the examples themselves are compared, for both splits and both kinds."""
    from training.data import eval_masks, split_dataset

    config, _first = trained
    windows = window_store.list_sealed(config.storage.root)
    masks = eval_masks(windows, "id", 0.2)
    assert [len(m) for m in masks] == [w.manifest["record_count"] for w in windows]
    for want_eval in (True, False):
        for kind in ("raw", "transformed"):
            by_ids = list(split_dataset(windows, "id", 0.2, want_eval, kind).as_numpy_iterator())
            by_masks = list(split_dataset(windows, "id", 0.2, want_eval, kind, masks).as_numpy_iterator())
            assert by_masks == by_ids and by_ids


def test_kept_rows_are_the_true_positions_of_each_batch_the_last_one_short():
    from training.data import kept_rows

    keep = np.array([False, False, False, True, True, False, True])
    assert [x.tolist() for x in kept_rows(keep, 2).as_numpy_iterator()] == [[], [1], [0], [0]]
    assert [x.tolist() for x in kept_rows(np.zeros(5, bool), 4).as_numpy_iterator()] == [[], []]
    assert list(kept_rows(np.zeros(0, bool), 1024).as_numpy_iterator()) == []
