"""Helpers shared by tests that read a storage root back independently of ctpipe's readers."""
from __future__ import annotations

import glob
import hashlib
import os

import tensorflow as tf
from tensorflow_transform.tf_metadata import schema_utils

from core import schema_store, window_store


def tree_digest(root):
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "windows", "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def read_ids_with_schema(root):
    """Ids of every sealed window's raw TFRecords, parsed with plain tf.data and the stored schema."""
    schema, _text, _v = schema_store.load(root)
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    ids = []
    for window in window_store.list_sealed(root):
        ds = tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP")
        for example in ds.map(lambda r: tf.io.parse_single_example(r, spec)):
            ids.append(example["id"].numpy()[0].decode() if example["id"].shape.rank else example["id"].numpy().decode())
        assert window.manifest["record_count"] == sum(1 for _ in ds)
    return ids
