"""``training.analyze_range``: the transform analyzed over exactly the training range, with
tf.Transform's analyzer cache per window version (pipeline/range_transform.py).

One backfill of 5 small windows, then analyses over ranges of them. Checked independently of the
run's own record: which entry folders exist on disk (and whether a cached entry's ENTRY.json was
rewritten: same inode and mtime), the rows tf.Transform's input really received (a Beam counter
per dataset, read from the pipeline result), and a full analysis without cache done here with
tf.Transform's plain AnalyzeDataset. About 4-5 minutes on the loaded 2-core machine (measured 250
and 288 s; each analysis is ~20-40 s, mostly Beam and tf.Transform start-up).
"""
from __future__ import annotations

import datetime as dt
import glob
import logging
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tfx_bsl.public import tfxio

from core import analysis_cache, layout, schema_store, window_store
from core.transform_store import current_transform, transform_dir
from pipeline import synthetic
from pipeline.backfill import run_backfill
from pipeline.config import config_from_dict
from pipeline.range_transform import analyze_range, range_cache_key, range_fingerprint

pytestmark = pytest.mark.slow

START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)


def _config(base, **training):
    return config_from_dict({
        "storage": {"root": str(base / "store")},
        "source": {"files": {"uri": str(base / "events" / "*.jsonl")}},
        "registry": {"uri": str(base / "registry"), "model_name": "sensors"},
        "training": {"epochs": 1, "backup_dir": str(base / "backup"), "analyze_range": True, **training},
        "gate": {"thresholds": [{"metric": "example_count", "lower_bound": 1}]},
    })


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from pipeline.options import pipeline_options

    base = tmp_path_factory.mktemp("range")
    synthetic.write_jsonl(str(base / "events"), synthetic.generate(START, 5, 120), rows_per_hour=120)
    config = _config(base)
    options = pipeline_options(os.path.join(os.path.dirname(__file__), "..", "..", "runner_configs", "direct.yaml"))
    run_backfill(config, options, None, None)
    windows = window_store.list_sealed(config.storage.root)
    assert len(windows) == 5
    return base, config, options, windows


def _analyze(config, options, windows):
    return analyze_range(config, windows, range_fingerprint(config, windows), options)


def _entry_dirs(config) -> dict:
    """{entry folder name: (inode, mtime_ns) of its ENTRY.json or None}, read from disk."""
    out = {}
    for path in glob.glob(os.path.join(config.storage.root, "analyzer_cache", "*", "*")):
        marker = os.path.join(path, "ENTRY.json")
        st = os.stat(marker) if os.path.exists(marker) else None
        out[os.path.relpath(path, os.path.join(config.storage.root, "analyzer_cache"))] = (
            (st.st_ino, st.st_mtime_ns) if st else None)
    return out


def _raw_examples(windows) -> list:
    paths = [p for w in windows for p in w.file_paths("raw")]
    return [bytes(r) for r in tf.data.TFRecordDataset(paths, compression_type="GZIP").as_numpy_iterator()]


def _full_analysis(config, windows, out_dir) -> str:
    """The reference: tf.Transform's AnalyzeDataset over the range's examples in one dataset, no cache."""
    from transforms.preprocess import load_function

    schema, text, _v = schema_store.load(config.storage.root)
    source = tfxio.TFExampleRecord(file_pattern=[p for w in windows for p in w.file_paths("raw")], schema=schema)
    fn = load_function(config.transform.preprocessing_fn, "fn")
    with beam.Pipeline() as p, tft_beam.Context(temp_dir=str(out_dir / "tmp"), force_tf_compat_v1=False):
        transform_fn = ((p | source.BeamSource(), source.TensorAdapterConfig())
                        | tft_beam.AnalyzeDataset(fn))
        _ = transform_fn | tft_beam.WriteTransformFn(str(out_dir / "full"))
    (out_dir / "full" / "metadata").mkdir(parents=True, exist_ok=True)
    (out_dir / "full" / "metadata" / "schema.pbtxt").write_text(text)  # the raw schema, as TFX lays it out
    return str(out_dir / "full")


def _transformed(transform_path: str, raw: list) -> dict:
    output = tft.TFTransformOutput(transform_path)
    spec = output.raw_feature_spec()
    parsed = tf.io.parse_example(tf.constant(raw), spec)
    return {k: v.numpy() for k, v in output.transform_raw_features(parsed, drop_unused_features=True).items()}


def _assets(transform_path: str) -> dict:
    folder = os.path.join(transform_path, "transform_fn", "assets")
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def test_a_range_sharing_windows_reads_them_from_cache_and_equals_a_full_analysis(store, tmp_path):
    _base, config, options, windows = store
    first = _analyze(config, options, windows[0:3])
    assert (first["analyzed"], first["from_cache"]) == (3, 0)
    ckey = first["cache_key"]
    before = _entry_dirs(config)
    assert set(before) == {f"{ckey}/{analysis_cache.entry_key(w.manifest)}" for w in windows[0:3]}
    assert all(before.values())

    second = _analyze(config, options, windows[1:4])  # the range rolled by one window
    after = _entry_dirs(config)
    new_entry = f"{ckey}/{analysis_cache.entry_key(windows[3].manifest)}"
    assert set(after) - set(before) == {new_entry}                       # one entry written: the new window
    for kept in set(before):
        assert after[kept] == before[kept], f"{kept} was rewritten"      # cached entries untouched
    rows = {w["window"]: w["rows_read"] for w in second["windows"]}
    assert rows == {f"{w.window_id} v1": (w.manifest["record_count"] if w is windows[3] else 0)
                    for w in windows[1:4]}                               # only the new window was read
    assert (second["analyzed"], second["from_cache"]) == (1, 2)
    assert current_transform(config.storage.root) != second["fingerprint"]  # not made CURRENT

    # the cached analysis equals tf.Transform's full analysis of the same range, without cache
    mine = transform_dir(config.storage.root, second["fingerprint"])
    full = _full_analysis(config, windows[1:4], tmp_path)
    assert _assets(mine) == _assets(full)
    raw = _raw_examples(windows[1:4])
    got, want = _transformed(mine, raw), _transformed(full, raw)
    assert set(got) == set(want)
    for name in sorted(want):
        if want[name].dtype.kind == "f":  # accumulators merged per window vs one pass: float32 rounding
            # only (measured: identical for 2 of the 3 z-scores, 4.8e-7 apart for the third)
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)

    again = _analyze(config, options, windows[1:4])  # the same range again: its transform is reused
    assert again["windows"][0]["source"] == "transform already published" and again["analyzed"] == 0
    assert _entry_dirs(config) == after


def test_a_changed_preprocessing_fn_does_not_reuse_the_cache(store):
    base, config, options, windows = store
    changed = _config(base, **{})
    changed = config_from_dict({**_as_dict(changed), "transform": {"preprocessing_fn": "tests.training._range_fns:"
                                                                                      "preprocessing_fn"}})
    schema_text = schema_store.load(config.storage.root)[1]
    assert range_cache_key(changed, schema_text) != range_cache_key(config, schema_text)
    record = _analyze(changed, options, windows[0:2])
    assert (record["analyzed"], record["from_cache"]) == (2, 0)
    assert all(w["rows_read"] == windows[i].manifest["record_count"] for i, w in enumerate(record["windows"]))
    assert record["fingerprint"] != range_fingerprint(config, windows[0:2])


def _as_dict(config):
    from pipeline.config import to_dict

    return to_dict(config)


def test_untrusted_entries_are_ignored_with_a_warning_and_analyzed_again(store, caplog):
    _base, config, options, windows = store
    root = config.storage.root
    seeded = _analyze(config, options, windows[3:5])  # entries of windows 3 and 4 exist
    ckey = seeded["cache_key"]
    e3, e4 = (analysis_cache.entry_key(w.manifest) for w in windows[3:5])
    part = sorted(glob.glob(os.path.join(layout.analyzer_cache_entry(root, ckey, e3), "*-of-*.gz")))[0]
    with open(part, "r+b") as handle:                 # corrupt: a cache file altered on disk
        handle.truncate(3)
    os.remove(os.path.join(layout.analyzer_cache_entry(root, ckey, e4), "ENTRY.json"))  # partial: no marker
    with caplog.at_level(logging.WARNING, logger="ctpipe.analysis_cache"):
        record = _analyze(config, options, windows[2:5])
    assert {e["entry"] for e in record["ignored_entries"]} == {e3, e4}
    assert caplog.text.count("ignored and analyzed again") == 2
    rows = {w["entry"]: w["rows_read"] for w in record["windows"]}
    assert rows[e3] == windows[3].manifest["record_count"] and rows[e4] == windows[4].manifest["record_count"]
    assert analysis_cache.check_entry(root, ckey, e3) is None and analysis_cache.check_entry(root, ckey, e4) is None


def test_training_on_the_range_transform_embeds_it_and_records_the_analysis(store, tmp_path):
    base, _config_unused, options, windows = store
    from pipeline.controller import run_training, select_windows
    from training.registry import open_registry

    config = _config(base, max_windows=3)
    root = config.storage.root
    chosen, _skipped, planned = select_windows(config)  # the newest 3 usable windows (small ones may be quarantined)
    assert planned == range_fingerprint(config, chosen)
    ckey = range_cache_key(config, schema_store.load(root)[1])
    cached = {analysis_cache.entry_key(w.manifest) for w in chosen
              if analysis_cache.check_entry(root, ckey, analysis_cache.entry_key(w.manifest)) is None}
    current = current_transform(root)
    outcome = run_training(config, options=options)
    fingerprint = range_fingerprint(config, chosen)
    assert [(w["window_id"], w["version"]) for w in outcome["windows"]] == [
        (w.window_id, w.version) for w in chosen], (outcome["windows"], outcome["skipped_windows"])
    assert outcome["transform_fingerprint"] == fingerprint != current
    assert current_transform(root) == current
    analysis = outcome["analysis"]
    assert analysis["mode"] == "training_range"
    assert {w["entry"] for w in analysis["windows"] if w["source"] in ("cache", "transform already published")} \
        >= cached
    registry = open_registry(config.registry.uri)
    version = registry.get("sensors", outcome["version"])
    assert version.lineage["analysis"]["fingerprint"] == fingerprint
    assert version.lineage["transform_fingerprint"] == fingerprint
    # the serving signature carries this range's vocabularies, not CURRENT's
    model_dir = registry.fetch("sensors", outcome["version"], str(tmp_path / "m"))
    mine, published = _assets(transform_dir(root, fingerprint)), _assets(transform_dir(root, current))
    assert mine != published
    served = {name: open(os.path.join(model_dir, "assets", name), "rb").read()
              for name in os.listdir(os.path.join(model_dir, "assets"))}
    assert {k: served[k] for k in mine} == mine
