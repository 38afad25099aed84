"""The gzip files of a window version (transforms/gzip_files.py), checked against TensorFlow's own
TFRecord writer and reader and Python's gzip module, which are independent implementations."""
import gzip
import io
import random

import pytest
import tensorflow as tf

from transforms.gzip_files import GzipWriter, gzip_member, in_background, tfrecord_frames, tfrecord_gz_bytes
from transforms.versions import provenance_bytes, provenance_json, read_tfrecords


def _records(seed: int, n: int) -> list:
    rng = random.Random(seed)
    # lengths around a few common sizes (the header cache) and some odd ones, empty included
    return [bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 7, 195, 195, 196, 4097))))
            for _ in range(n)]


def _tf_written(records, path, compression: str) -> bytes:
    with tf.io.TFRecordWriter(str(path), options=tf.io.TFRecordOptions(compression_type=compression)) as writer:
        for record in records:
            writer.write(record)
    return path.read_bytes()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frames_are_the_bytes_tensorflows_writer_writes(tmp_path, seed):
    records = _records(seed, 300)
    assert tfrecord_frames(records) == _tf_written(records, tmp_path / "plain.tfrecord", "")


def test_the_gzip_file_reads_back_through_tensorflow_which_checks_every_crc(tmp_path):
    records = _records(3, 500)
    path = tmp_path / "part.tfrecord.gz"
    path.write_bytes(tfrecord_gz_bytes(records))
    assert list(tf.data.TFRecordDataset([str(path)], compression_type="GZIP").as_numpy_iterator()) == records
    # a flipped bit in a record is caught by TensorFlow's data CRC: the frames carry real CRCs
    frames = bytearray(tfrecord_frames([b"abcdefgh", b"ij"]))
    frames[12 + 2] ^= 0x10
    path.write_bytes(gzip_member(bytes(frames)))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset([str(path)], compression_type="GZIP"))


def test_the_same_records_give_the_same_bytes_and_the_python_reader_agrees():
    records = _records(4, 200)
    assert tfrecord_gz_bytes(records) == tfrecord_gz_bytes(list(records))
    assert read_tfrecords(tfrecord_gz_bytes(records)) == records
    assert read_tfrecords(tfrecord_gz_bytes([])) == []


@pytest.mark.parametrize("level", [1, 6, 9])
@pytest.mark.parametrize("data", [b"", b"x", bytes(range(256)) * 300])
def test_a_gzip_member_is_what_gzipfile_writes_with_mtime_0(level, data):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=level) as handle:
        handle.write(data)
    assert gzip_member(data, level) == buf.getvalue()
    assert gzip.decompress(gzip_member(data, level)) == data


def test_provenance_is_its_json_gzipped_and_compression_in_background_gives_the_same_bytes():
    from core.records import Event

    events = [Event(f"id-{i}", 1_700_000_000_000 + i, {}, f"file-{i % 3}", str(i)) for i in range(1000)]
    assert gzip.decompress(provenance_bytes(events)) == provenance_json(events)
    records = _records(5, 400)
    futures = [in_background(tfrecord_gz_bytes, records) for _ in range(3)]
    assert {f.result() for f in futures} == {tfrecord_gz_bytes(records)}


@pytest.mark.parametrize("level", [1, 6, 9])
def test_a_member_fed_in_pieces_is_the_member_of_the_pieces_joined(level):
    rng = random.Random(level)
    pieces = [tfrecord_frames(_records(seed, rng.choice((0, 1, 40, 700)))) for seed in range(12)]
    writer = GzipWriter(level)
    for piece in pieces:
        writer.add(piece)
    assert writer.finish() == gzip_member(b"".join(pieces), level)
    empty = GzipWriter(level)
    assert empty.finish() == gzip_member(b"", level)
