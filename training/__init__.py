"""Trainer, evaluation gate and model registry of ctpipe."""

import os as _os

# tf.Transform and MultiWorkerMirroredStrategy need Keras 2 (tf-keras); must be set before TF loads.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
