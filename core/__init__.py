"""ctpipe's base layer: the contracts every other package shares.

Storage access (``storage``: Beam FileSystems), the layout of every path under a storage root and
the window-id format (``layout``), sealed-window manifests (``window_store``), the values that
flow between stages (``records``), schema and transform stores, the storage root's lease with its
fencing token (``lock``, on the conditional writes of ``lease_stores``), the code version, and the one error hierarchy with its exit codes (``errors``).

``pipeline``, ``transforms`` and ``training`` import this package; it imports none of them.
Nothing here imports TensorFlow or runs Beam at import time, so the CLI's read-only commands
stay fast.
"""

import os as _os

# tf.Transform and MultiWorkerMirroredStrategy need Keras 2 (tf-keras); must be set before TF loads.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
