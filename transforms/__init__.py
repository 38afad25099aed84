"""Beam PTransforms of ctpipe and the pure functions inside them."""

import core  # noqa: F401,E402  (TF_USE_LEGACY_KERAS before TensorFlow loads)
