"""ctpipe pipeline package: CLI, configuration, graph assembly, runner options, stores, controller.

Stages themselves live in ``transforms`` (Beam) and ``training`` (TensorFlow); this package
only wires them together.
"""

import os as _os

# tf.Transform and MultiWorkerMirroredStrategy need Keras 2 (tf-keras); must be set before TF loads.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import warnings as _warnings

# google-cloud client libraries warn at import about future Python support; not actionable here.
_warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")
