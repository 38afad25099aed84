"""Data-quality results read back from sealed windows: Prometheus export and cross-source consistency.

``export_quality_metrics`` sets the DATA_QUALITY and DRIFT gauges from the written manifests (the
CLI calls it after a run, before pushing metrics). ``window_consistency`` compares the same window
sealed from two sources (Kafka and object storage, usually two storage roots): counts and ids.
"""
from __future__ import annotations

from typing import Optional

from core import window_store
from pipeline import metrics


def export_quality_metrics(root: str, window_ids: Optional[list] = None) -> int:
    """Set ``ctpipe_data_quality{window,dimension,feature}`` for each sealed window (all, or
    ``window_ids``) and ``ctpipe_drift_score{feature}`` for the newest one. Returns windows exported."""
    windows = [w for w in window_store.list_sealed(root) if window_ids is None or w.window_id in window_ids]
    for w in windows:
        q = w.manifest.get("quality") or {}
        gauge = metrics.DATA_QUALITY
        for feature, value in (q.get("completeness") or {}).items():
            gauge.labels(window=w.window_id, dimension="completeness", feature=feature).set(value)
        for dimension in ("validity", "uniqueness"):
            if dimension in q:
                gauge.labels(window=w.window_id, dimension=dimension, feature="").set(q[dimension])
        if q.get("timeliness"):
            gauge.labels(window=w.window_id, dimension="timeliness_p95_s", feature="").set(q["timeliness"]["p95_s"])
        if "consistency" in q:
            gauge.labels(window=w.window_id, dimension="consistency", feature="").set(1.0 if q["consistency"] else 0.0)
        for feature, score in ((q.get("drift") or {}).get("features") or {}).items():
            if score["score"] is not None:
                gauge.labels(window=w.window_id, dimension="drift", feature=feature).set(score["score"])
        for feature, score in ((q.get("skew") or {}).get("features") or {}).items():
            if score["score"] is not None:
                gauge.labels(window=w.window_id, dimension="skew", feature=feature).set(score["score"])
    if windows:
        newest = (windows[-1].manifest.get("quality") or {}).get("drift") or {}
        for feature, score in (newest.get("features") or {}).items():
            if score["score"] is not None:
                metrics.DRIFT.labels(feature=feature).set(score["score"])
    return len(windows)


def window_ids_of(window: window_store.SealedWindow, id_field: str) -> list[str]:
    """The event ids held by a sealed window (from its raw examples)."""
    import tensorflow as tf

    from core import storage

    ids = []
    for path in window.file_paths("raw"):
        if "://" in path:
            import os
            import tempfile

            fd, local = tempfile.mkstemp(suffix=".tfrecord.gz")
            with os.fdopen(fd, "wb") as handle:
                handle.write(storage.read_bytes(path))
            path = local
        for record in tf.data.TFRecordDataset([path], compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature[id_field]
            values = feature.bytes_list.value or [str(v).encode() for v in feature.int64_list.value]
            ids.append(values[0].decode())
    return sorted(ids)


def window_consistency(a: window_store.SealedWindow, b: window_store.SealedWindow, id_field: str,
                       sample: int = 10) -> dict:
    """Counts and ids of one window sealed twice (e.g. from Kafka and from object storage)."""
    ids_a, ids_b = window_ids_of(a, id_field), window_ids_of(b, id_field)
    set_a, set_b = set(ids_a), set(ids_b)
    only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
    return {
        "window_id": a.window_id,
        "a": {"path": a.path, "records": len(ids_a)},
        "b": {"path": b.path, "records": len(ids_b)},
        "counts_agree": len(ids_a) == len(ids_b),
        "ids_agree": not only_a and not only_b,
        "consistent": len(ids_a) == len(ids_b) and not only_a and not only_b,
        "only_in_a": len(only_a), "only_in_b": len(only_b),
        "only_in_a_sample": only_a[:sample], "only_in_b_sample": only_b[:sample],
    }
