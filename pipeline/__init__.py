"""ctpipe pipeline package: CLI, configuration, graph assembly, runner options, stores, controller.

Stages themselves live in ``transforms`` (Beam) and ``training`` (TensorFlow); this package
only wires them together.
"""

import warnings as _warnings

import core  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

# google-cloud client libraries warn at import about future Python support; not actionable here.
_warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")
