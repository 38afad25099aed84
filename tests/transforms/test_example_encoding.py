"""deterministic_examples lays out the bytes of the canonical path: tfx_bsl's encoding of each row
re-serialized by protobuf deterministically, on random batches of every column shape."""
import math
import random

import pyarrow as pa
import pytest
from tensorflow.core.example import example_pb2
from tfx_bsl.coders import example_coder

from transforms.arrow import canonical_examples
from transforms.example_encoding import deterministic_examples, entry_order, varint_sizes

TYPES = {
    "float": [pa.large_list(pa.float32()), pa.list_(pa.float32())],
    "int": [pa.large_list(pa.int64()), pa.list_(pa.int64())],
    "bytes": [pa.large_list(pa.large_binary()), pa.list_(pa.binary())],
}
NAMES = ["a", "b", "zz", "Z", "é", "a_1", "label", "x" * 200, "aa", "ab", "abc", "a!", "ba"]


def _value(rng, kind: str, shape: str):
    if shape == "one":
        n = 1
    else:
        r = rng.random()
        if r < 0.15:
            return None
        if r < 0.25:
            return []
        n = 1 if r < 0.6 else rng.randint(2, 40 if rng.random() < 0.95 else 2000)
    if kind == "float":
        return [rng.choice([0.0, -0.0, math.nan, math.inf, -math.inf, 1e-45, 3.4e38, rng.uniform(-1e6, 1e6)])
                for _ in range(n)]
    if kind == "int":
        return [rng.choice([0, -1, 2 ** 63 - 1, -2 ** 63, rng.randint(-10 ** 12, 10 ** 12), 127, 128, 16383, 16384])
                for _ in range(n)]
    return [bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 5, 127, 128, 300, 20000 if n == 1 else 3])))
            for _ in range(n)]


def _column(rng, kind: str, rows: int, shape: str):
    arrow_type = rng.choice(TYPES[kind])
    return pa.array([_value(rng, kind, shape) for _ in range(rows)], arrow_type)


def _canonical(batch):
    return canonical_examples(example_coder.RecordBatchToExamples(batch))


@pytest.mark.parametrize("seed", range(6))
def test_random_batches_give_the_canonical_bytes(seed):
    rng = random.Random(seed)
    for _ in range(15):
        rows = rng.choice([1, 2, 7, 100, 300])
        names = rng.sample(NAMES, rng.randint(1, 8))
        columns = [_column(rng, rng.choice(sorted(TYPES)), rows, rng.choice(["one", "one", "any"])) for _ in names]
        batch = pa.RecordBatch.from_arrays(columns, names)
        assert deterministic_examples(batch) == _canonical(batch)
        part = batch.slice(rows // 3, rows // 2)  # columns with an offset into their buffers
        assert deterministic_examples(part) == _canonical(part)


def test_the_usual_window_batch_parses_back_to_its_values():
    batch = pa.RecordBatch.from_arrays(
        [pa.array([[f"dev-{i % 7}".encode()] for i in range(50)], pa.large_list(pa.large_binary())),
         pa.array([[i - 25] for i in range(50)], pa.large_list(pa.int64())),
         pa.array([[i / 4] for i in range(50)], pa.large_list(pa.float32()))],
        ["device", "label", "temperature"])
    examples = deterministic_examples(batch)
    assert examples == _canonical(batch)
    for i, data in enumerate(examples):
        features = example_pb2.Example.FromString(data).features.feature
        assert features["device"].bytes_list.value == [f"dev-{i % 7}".encode()]
        assert features["label"].int64_list.value == [i - 25]
        assert features["temperature"].float_list.value == [i / 4]


def test_an_empty_batch_has_no_examples():
    empty = pa.RecordBatch.from_arrays([pa.array([], pa.large_list(pa.float32()))], ["a"])
    assert deterministic_examples(empty) == [] == _canonical(empty)


def test_map_order_is_protobufs_deterministic_order():
    example = example_pb2.Example()
    for name in NAMES:
        example.features.feature[name].int64_list.value.append(1)
    data = example.SerializeToString(deterministic=True)
    positions = {name: data.index(b"\x0a" + bytes([len(name.encode())]) + name.encode() + b"\x12")
                 for name in NAMES if len(name.encode()) < 128}
    assert sorted(positions, key=positions.get) == sorted(positions, key=entry_order)


def test_varint_sizes_at_every_boundary():
    import numpy as np
    from tensorflow.core.example import feature_pb2

    values = [0, 127, 128, 16383, 16384, 2 ** 21 - 1, 2 ** 21, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]
    want = []
    for v in values:
        packed = feature_pb2.Int64List(value=[v - 2 ** 64 if v >= 2 ** 63 else v]).SerializeToString()
        want.append(len(packed) - 2)  # less the field's tag and length
    assert varint_sizes(np.array(values, np.uint64)).tolist() == want
