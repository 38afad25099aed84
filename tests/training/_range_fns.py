"""A second preprocessing_fn (tests of training.analyze_range): the sensors features with the
humidity scaled to [0, 1] instead of a z-score, so its analyzers differ from examples.sensors'."""
from __future__ import annotations

import tensorflow_transform as tft

from examples import sensors


def preprocessing_fn(inputs: dict) -> dict:
    outputs = sensors.preprocessing_fn(inputs)
    outputs["humidity_z"] = tft.scale_to_0_1(sensors._dense(inputs["humidity"], 0.0))
    return outputs
