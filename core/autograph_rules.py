"""AutoGraph conversion rules for the libraries ctpipe's TensorFlow code runs through.

TensorFlow's AutoGraph rewrites every Python function a ``tf.function`` calls, unless the
function's module is on its do-not-convert list. That list names ``keras`` (Keras 3) but not
``tf_keras`` (the Keras 2 that ``TF_USE_LEGACY_KERAS`` selects) nor ``tensorflow_transform``, so
the first ``fit``/``evaluate``/export of a process (the model holds tf.Transform's layer) spends
most of its time transpiling those libraries' own sources, written for graph mode, which never
need the rewrite (bench/bench_first_train.py: 44.8 s -> 7.3 s; the backfill is unchanged). Users'
preprocessing_fn and model_fn are still converted.

TensorFlow is imported here only when ``apply()`` is called (core imports no TF at module level).
"""
from __future__ import annotations

LIBRARIES = ("tf_keras", "tensorflow_transform")


def apply() -> None:
    """Put ``LIBRARIES`` on AutoGraph's do-not-convert list (idempotent)."""
    from tensorflow.python.autograph.core import config

    present = {getattr(rule, "_prefix", None) for rule in config.CONVERSION_RULES}
    added = tuple(config.DoNotConvert(name) for name in LIBRARIES if name not in present)
    if added:
        config.CONVERSION_RULES = added + tuple(config.CONVERSION_RULES)
