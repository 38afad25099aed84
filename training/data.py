"""tf.data input over sealed windows: transformed examples for training, raw for evaluation.

Each window version stores raw and transformed examples in the same order (sorted by id), so the
two files zip row by row; the train/eval split is a hash of the raw id, deterministic across runs
and machines, with no id needed among the transformed features.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

HASH_BUCKETS = 10_000


def is_eval_id(ids: tf.Tensor, eval_fraction: float) -> tf.Tensor:
    """True for ids in the held-out split (a stable hash of the id string)."""
    bucket = tf.strings.to_hash_bucket_fast(ids, HASH_BUCKETS)
    return bucket < int(round(eval_fraction * HASH_BUCKETS))


SPLIT_BATCH = 1024


def eval_masks(windows: Sequence, id_field: str, eval_fraction: float) -> list:
    """Per window, a numpy bool per row of its raw examples: True where the row is held out.
    One pass over the raw files' ids, so the epochs of a fit need not read them again."""
    id_spec = {id_field: tf.io.FixedLenFeature([], tf.string)}
    masks = []
    for window in windows:
        held = (tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP").batch(SPLIT_BATCH)
                .map(lambda b: is_eval_id(tf.io.parse_example(b, id_spec)[id_field], eval_fraction),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
        parts = list(held.as_numpy_iterator())
        masks.append(np.concatenate(parts) if parts else np.zeros(0, bool))
    return masks


def kept_rows(keep: np.ndarray, batch: int) -> tf.data.Dataset:
    """One element per batch of ``batch`` rows (the last may be shorter): the positions in that
    batch of the rows where ``keep`` is True, for ``tf.gather``: each batch is one gather by
    positions computed once, not a ``tf.boolean_mask`` (several ops) per batch, on the CPU a
    2-core machine's training step competes for (docs/BENCHMARKS.md, stop 20)."""
    rows = np.flatnonzero(keep)
    lengths = np.bincount(rows // batch, minlength=-(-len(keep) // batch))
    return tf.data.Dataset.from_tensor_slices(tf.RaggedTensor.from_row_lengths(rows % batch, lengths))


def split_dataset(windows: Sequence, id_field: str, eval_fraction: float, want_eval: bool, kind: str,
                  masks: Optional[Sequence] = None):
    """Serialized examples (``kind`` = 'raw' or 'transformed') of one split of ``windows``.

    Raw and transformed files are read in the same order and cut into batches of the same size,
    so the i-th batches hold the same rows: the ids are parsed and hashed a batch at a time and
    the mask applied to the wanted kind (per-record map/filter was 3x slower than a plain fit).
    ``masks`` (``eval_masks`` of these windows): the masks are read from memory instead (as the
    positions to keep in each batch, ``kept_rows``), and raw files are read only when raw examples
    are wanted.
    """
    id_spec = {id_field: tf.io.FixedLenFeature([], tf.string)}
    if kind not in ("raw", "transformed"):
        raise ValueError(f"kind must be 'raw' or 'transformed', not {kind!r}")
    wanted = tf.data.TFRecordDataset([p for w in windows for p in w.file_paths(kind)],
                                     compression_type="GZIP").batch(SPLIT_BATCH)
    if masks is not None:
        held = np.concatenate(list(masks)) if len(masks) else np.zeros(0, bool)
        return (tf.data.Dataset.zip((wanted, kept_rows(held == want_eval, SPLIT_BATCH)))
                .map(tf.gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch())

    def select(raw_batch, wanted_batch):
        ids = tf.io.parse_example(raw_batch, id_spec)[id_field]
        mask = tf.equal(is_eval_id(ids, eval_fraction), want_eval)
        return tf.boolean_mask(wanted_batch, mask)

    if kind == "raw":
        batches = wanted.map(lambda b: select(b, b), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        raw = tf.data.TFRecordDataset([p for w in windows for p in w.file_paths("raw")],
                                      compression_type="GZIP").batch(SPLIT_BATCH)
        batches = tf.data.Dataset.zip((raw, wanted)).map(select, num_parallel_calls=tf.data.AUTOTUNE,
                                                          deterministic=True)
    return batches.unbatch()


def training_dataset(windows, id_field: str, eval_fraction: float, transformed_spec: dict, label_key: str,
                     batch_size: int, shuffle_seed: int = 17, tft_output=None, fingerprint: Optional[str] = None,
                     masks: Optional[Sequence] = None):
    """(features, label) batches of the training split, parsed with the transform's output spec.

    Windows sealed with transform ``fingerprint`` (all of them when it is None) are read from their
    stored transformed examples; the others (sealed before that transform was published) have
    their raw examples transformed here with ``tft_output``, so windows of every backfill and of
    the stream train together under one transform. The two streams are mixed at random in
    proportion to their record counts. ``masks``: ``eval_masks(windows, ...)`` (computed here when
    None), so no epoch reads the raw files only for the split."""
    if masks is None:
        masks = eval_masks(windows, id_field, eval_fraction)
    is_stored = [fingerprint is None or w.manifest["transform_fingerprint"] == fingerprint for w in windows]
    stored = [w for w, keep in zip(windows, is_stored) if keep]
    others = [w for w, keep in zip(windows, is_stored) if not keep]
    stored_masks = [m for m, keep in zip(masks, is_stored) if keep]
    other_masks = [m for m, keep in zip(masks, is_stored) if not keep]

    def finish(features):
        label = features.pop(label_key)
        return features, tf.cast(label, tf.float32)

    parts, weights = [], []
    if stored:
        serialized = split_dataset(stored, id_field, eval_fraction, False, "transformed", stored_masks)
        parts.append(serialized.shuffle(10_000, seed=shuffle_seed, reshuffle_each_iteration=True).batch(batch_size)
                     .map(lambda b: finish(tf.io.parse_example(b, transformed_spec)),
                          num_parallel_calls=tf.data.AUTOTUNE))
        weights.append(float(sum(w.manifest["record_count"] for w in stored)))
    if others:
        if tft_output is None:
            raise ValueError("windows of another transform need tft_output to be transformed for training")
        raw_spec = tft_output.raw_feature_spec()
        layer = tft_output.transform_features_layer()

        def transform(batch):
            out = layer(tf.io.parse_example(batch, raw_spec))
            return finish({name: out[name] for name in transformed_spec})

        serialized = split_dataset(others, id_field, eval_fraction, False, "raw", other_masks)
        parts.append(serialized.shuffle(10_000, seed=shuffle_seed + 1, reshuffle_each_iteration=True)
                     .batch(batch_size).map(transform))
        weights.append(float(sum(w.manifest["record_count"] for w in others)))
    if len(parts) == 1:
        return parts[0].prefetch(tf.data.AUTOTUNE)
    total = sum(weights)
    return tf.data.Dataset.sample_from_datasets(parts, weights=[w / total for w in weights], seed=shuffle_seed,
                                                stop_on_empty_dataset=False).prefetch(tf.data.AUTOTUNE)


def raw_eval_examples(windows, id_field: str, eval_fraction: float) -> list[bytes]:
    """Serialized raw tf.Examples of the held-out split (what serving signatures take)."""
    return [bytes(x) for x in split_dataset(windows, id_field, eval_fraction, True, "raw").as_numpy_iterator()]
