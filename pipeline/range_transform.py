"""The training range's own transform (``training.analyze_range``): analyzed over exactly the
windows a run trains on, with tf.Transform's analyzer cache per window version.

``range_fingerprint`` is pure (the preprocessing_fn's source, the raw schema, the tf.Transform
version and each chosen window's raw content digest), so the run id and a retry's reuse are known
before anything is analyzed. ``analyze_range`` then:

1. returns at once when ``<root>/transforms/<fingerprint>/`` is already published (an earlier
   attempt of the same range, or an overlapping run, analyzed it);
2. looks the windows up in ``<root>/analyzer_cache/<cache_key>/`` (core/analysis_cache.py): trusted
   entries are read from cache, untrusted ones (a crash mid-publication, altered files) are
   reported with a warning and analyzed again;
3. runs one Beam pipeline (transforms/range_analysis.py) that reads only the windows the analysis
   still needs, writes their new cache entries and the transform_fn to the run's scratch space;
4. under the root's lease (and the caller's fence, the controller's leader lease), publishes each
   new cache entry (ENTRY.json last) and the transform under ``<root>/transforms/<fingerprint>/``
   (COMPLETE last), each publish fenced.

It is **not** made CURRENT: CURRENT is what sealing applies (``ctpipe stream``, backfills, the
unbounded graph), and moving it at every training run would give neighbouring windows different
stored transforms and make the stream reload a transform per run; the model does not need it,
since its serving signature embeds the transform it was trained with. The record returned (kept
in the run record and the lineage as ``analysis``) says what was analyzed, what came from cache,
what was ignored and why.
"""
from __future__ import annotations

import os
import sys
import time

from core import analysis_cache, layout, schema_store, storage
from core.errors import ConfigError
from core.transform_store import is_published

WHY_NOT_CURRENT = ("CURRENT is the transform sealing applies (stream, backfill); the model embeds its own "
                   "transform in its serving signature")


def _schema_text(config, windows) -> str:
    return schema_store.load(config.storage.root, windows[-1].manifest["schema_version"])[1]


def range_fingerprint(config, windows) -> str:
    """The transform fingerprint of ``config``'s preprocessing_fn analyzed over ``windows``."""
    from transforms.preprocess import transform_fingerprint

    return transform_fingerprint(config.transform.preprocessing_fn, _schema_text(config, windows),
                                 [(f"{w.window_id}.v{w.version}", analysis_cache.raw_digest(w.manifest))
                                  for w in windows])


def range_cache_key(config, schema_text: str) -> str:
    import tensorflow_transform as tft

    from transforms.preprocess import code_digest

    fn = config.transform.preprocessing_fn
    return analysis_cache.cache_key(fn, code_digest(fn), schema_text, tft.__version__,
                                    f"{sys.version_info.major}.{sys.version_info.minor}")


def _tf_readable(path: str) -> bool:
    from pipeline.specs import TENSORFLOW_SCHEMES

    return storage.is_local(path) or path.startswith(TENSORFLOW_SCHEMES)


def _counters(result) -> dict:
    from apache_beam.metrics.metric import MetricsFilter

    from transforms.range_analysis import COUNTER_NAMESPACE

    out = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
    return out


def analyze_range(config, windows, fingerprint: str, options=None, lock_timeout_s: float = 0.0,
                  fence=None) -> dict:
    """Make transform ``fingerprint`` (``range_fingerprint`` of ``windows``) exist under the root,
    analyzing what the cache does not hold; returns the ``analysis`` record (module docstring)."""
    root = config.storage.root
    names = {analysis_cache.entry_key(w.manifest): f"{w.window_id} v{w.version}" for w in windows}
    base = {"mode": "training_range", "fingerprint": fingerprint, "published_current": False,
            "why_not_current": WHY_NOT_CURRENT}
    if is_published(root, fingerprint):
        return dict(base, cache_key=None, analyzed=0, from_cache=0, ignored_entries=[], analysis_seconds=0.0,
                    windows=[{"window": n, "entry": e, "source": "transform already published"}
                             for e, n in names.items()],
                    note="an earlier run analyzed this very range: its transform is reused")
    from training.strategy import describe_environment

    if describe_environment()["workers"] > 1:
        raise ConfigError(f"training.analyze_range: transform {fingerprint} of this training range is not "
                          "published, and the workers of a multi-worker run (TF_CONFIG) do not analyze (each would "
                          "run its own, uncoordinated analysis of the range); run one "
                          "single-process `ctpipe train` of this range first, or set training.analyze_range: false")
    return _analyze(config, windows, fingerprint, names, base, options, lock_timeout_s, fence)


def _analyze(config, windows, fingerprint, names, base, options, lock_timeout_s, fence) -> dict:
    import apache_beam as beam

    from pipeline.backfill import new_run_id
    from pipeline.lease import Fences, root_lease
    from pipeline.specs import check_transform_scratch, transform_scratch
    from transforms.preprocess import publish_transform
    from transforms.range_analysis import AnalyzeRange, RangeDataset, rows_counter_name

    root = config.storage.root
    started = time.time()
    schema, schema_text, _version = schema_store.load(root, windows[-1].manifest["schema_version"])
    ckey = range_cache_key(config, schema_text)
    found = analysis_cache.lookup(root, ckey, names)
    run_id = new_run_id("analysis")
    scratch = transform_scratch(config, run_id)
    if options is None:
        from pipeline.options import pipeline_options
        from pipeline.stores import object_store_flags

        options = pipeline_options(config.runner_config, object_store_flags=object_store_flags(config))
    check_transform_scratch(config, options)
    cache_in = layout.analyzer_cache_dir(root, ckey)
    if not _tf_readable(root):  # TensorFlow reads tf.Transform's cache manifests: stage them where it can
        cache_in = storage.join(scratch, "cache_in")
        for ekey in found.cached:
            storage.copy_tree(layout.analyzer_cache_entry(root, ckey, ekey), storage.join(cache_in, ekey))
    elif storage.is_local(cache_in):
        cache_in = os.path.abspath(cache_in)
    cache_out, staging = storage.join(scratch, "cache_out"), storage.join(scratch, "transform_output")
    datasets = [RangeDataset(analysis_cache.entry_key(w.manifest),
                             tuple(os.path.abspath(p) if storage.is_local(p) else p for p in w.file_paths("raw")))
                for w in windows]
    stage = AnalyzeRange(config.transform.preprocessing_fn, schema, datasets, set(found.cached), cache_in,
                         cache_out, staging, storage.join(scratch, "tft_tmp"))
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "AnalyzeRange" >> stage
    result = pipeline.run()
    result.wait_until_finish()
    rows = _counters(result)
    published = []
    with root_lease(root, "train", lock_timeout_s) as lock:
        fences = Fences(lock, fence)
        for ekey in sorted(stage.needed):
            staged = storage.join(cache_out, ekey)
            if storage.glob(staged.rstrip("/") + "/MANIFEST"):
                analysis_cache.publish_entry(root, ckey, ekey, staged, fence=fences)
                published.append(ekey)
        publish_transform(staging, root, fingerprint, schema_text, fence=fences)
    storage.delete_tree(scratch)
    per_window = [{"window": name, "entry": ekey,
                   "source": ("analyzed" if ekey in stage.needed else "cache" if ekey in found.cached
                              else "not read (no analyzer needs it)"),
                   "rows_read": rows.get(rows_counter_name(ekey), 0)} for ekey, name in names.items()]
    return dict(base, cache_key=ckey, windows=per_window,
                analyzed=sum(1 for w in per_window if w["source"] == "analyzed"),
                from_cache=sum(1 for w in per_window if w["source"] == "cache"),
                ignored_entries=list(found.ignored), entries_published=published,
                analysis_seconds=round(time.time() - started, 3),
                note=None if found.cached or not published else "nothing of this range was cached yet")
