"""preprocessing_fn and model_fn for the synthetic sensor events of ``ctpipe gen``.

This is the user-owned code that config points at (``transform.preprocessing_fn:
examples.sensors:preprocessing_fn``, ``training.model_fn: examples.sensors:model_fn``). Copy it
as the starting point for your own features.

Raw features: device_id (string), firmware (string), temperature, vibration, humidity (floats),
label (int 0/1: the device failed within the hour). Id and event time are not model inputs.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft

NUMERIC = ("temperature", "vibration", "humidity")
CATEGORICAL = ("firmware", "device_id")
LABEL = "label"


def _dense(x, default):
    """[batch, 1] dense tensor from a dense or sparse (optional feature) input."""
    if isinstance(x, tf.SparseTensor):
        return tft.sparse_tensor_to_dense_with_shape(x, [None, 1], default_value=default)
    return x


def preprocessing_fn(inputs: dict) -> dict:
    outputs = {}
    for name in NUMERIC:
        value = _dense(inputs[name], 0.0)
        outputs[f"{name}_z"] = tft.scale_to_z_score(value)
    for name in CATEGORICAL:
        outputs[f"{name}_idx"] = tft.compute_and_apply_vocabulary(
            _dense(inputs[name], ""), top_k=200, num_oov_buckets=1, vocab_filename=name)
    if LABEL in inputs:
        outputs[LABEL] = tf.cast(_dense(inputs[LABEL], 0), tf.int64)
    return outputs


def model_fn(transformed_spec: dict, label_key: str, tf_transform_output) -> tf.keras.Model:
    """A compiled Keras model over the transformed features (label excluded)."""
    inputs, pieces = {}, []
    for name in NUMERIC:
        key = f"{name}_z"
        inputs[key] = tf.keras.Input(shape=(1,), name=key, dtype=tf.float32)
        pieces.append(inputs[key])
    for name in CATEGORICAL:
        key = f"{name}_idx"
        size = tf_transform_output.vocabulary_size_by_name(name) + 1
        inputs[key] = tf.keras.Input(shape=(1,), name=key, dtype=tf.int64)
        embedded = tf.keras.layers.Embedding(size, 4)(inputs[key])
        pieces.append(tf.keras.layers.Flatten()(embedded))
    x = tf.keras.layers.Concatenate()(pieces)
    x = tf.keras.layers.Dense(16, activation="relu")(x)
    output = tf.keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = tf.keras.Model(inputs=inputs, outputs=output)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=[tf.keras.metrics.AUC(name="auc"), tf.keras.metrics.BinaryAccuracy(name="accuracy")])
    return model
