"""AutoGraph leaves tf_keras's and tf.Transform's own code alone once training is loaded (their
transpiling cost minutes on the first fit of every process), and still converts users' code."""
from __future__ import annotations


def test_library_code_is_not_converted_and_user_code_is():
    import tensorflow_transform as tft
    import tf_keras
    from tensorflow.python.autograph.core import config
    from tensorflow.python.autograph.impl.conversion import is_allowlisted

    import training.trainer  # noqa: F401  (applies the rules)
    from core import autograph_rules
    from examples import sensors

    assert is_allowlisted(tf_keras.Model.fit) and is_allowlisted(tf_keras.layers.Dense.call)
    assert is_allowlisted(tft.scale_to_z_score)
    assert not is_allowlisted(sensors.preprocessing_fn) and not is_allowlisted(sensors.model_fn)
    before = len(config.CONVERSION_RULES)
    autograph_rules.apply()  # idempotent
    assert len(config.CONVERSION_RULES) == before
