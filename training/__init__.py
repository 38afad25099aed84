"""Trainer, evaluation gate and model registry of ctpipe."""

import core  # noqa: F401,E402  (TF_USE_LEGACY_KERAS before TensorFlow loads)
