"""Which examples the gate trusts (pipeline/screening.trusted_sets): the golden set's files and
windows, and a clear error for a golden set that is not there. Cost: about 1 s after TF's import."""
from __future__ import annotations

import pytest

from core.errors import ConfigError
from pipeline.config import config_from_dict
from pipeline.screening import trusted_sets


def _example(i: int) -> bytes:
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"g-{i}".encode()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2]))})).SerializeToString()


def test_golden_examples_are_read_from_plain_and_gzip_tfrecords(tmp_path):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(tmp_path / "a.tfrecord")) as w:
        for i in range(3):
            w.write(_example(i))
    with tf.io.TFRecordWriter(str(tmp_path / "b.tfrecord.gz"), options="GZIP") as w:
        for i in range(3, 5):
            w.write(_example(i))
    config = config_from_dict({"storage": {"root": str(tmp_path / "store")},
                               "gate": {"trusted": {"golden_examples": str(tmp_path / "*.tfrecord*")}}})
    sets = trusted_sets(config, None, str(tmp_path / "scratch"))
    assert [(name, source) for name, source, _ in sets] == [("golden", str(tmp_path / "*.tfrecord*"))]
    assert sets[0][2] == [_example(i) for i in range(5)]


def test_a_golden_set_that_is_not_there_is_an_error_naming_the_setting(tmp_path):
    config = config_from_dict({"storage": {"root": str(tmp_path)},
                               "gate": {"trusted": {"golden_examples": str(tmp_path / "none-*.tfrecord")}}})
    with pytest.raises(ConfigError, match="gate.trusted.golden_examples .* matches no file"):
        trusted_sets(config, None, str(tmp_path / "scratch"))
    config = config_from_dict({"storage": {"root": str(tmp_path)},
                               "gate": {"trusted": {"golden_windows": ["20261127T0100Z"]}}})
    with pytest.raises(ConfigError, match="gate.trusted.golden_windows: no sealed window 20261127T0100Z"):
        trusted_sets(config, None, str(tmp_path / "scratch"))


def test_no_production_and_no_golden_set_means_no_trusted_data(tmp_path):
    assert trusted_sets(config_from_dict({"storage": {"root": str(tmp_path)}}), None, str(tmp_path)) == []
