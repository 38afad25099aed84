"""Training input from windows on an object store: stage-then-read vs read through Beam every epoch.

TensorFlow 2.16 has no s3:// file system, so tf.data cannot open a window on S3 itself. Two ways
round it, measured on the same files in one run against a local S3 server (moto, loopback):

- stage: core.window_staging.stage_windows (copy through Beam FileSystems, sha256 + size checked
  against the manifest), then tf.data.TFRecordDataset over the local copies for every epoch;
- generator: tf.data.Dataset.from_generator over Beam FileSystems.open (GZIP) and Beam's own
  TFRecord framing reader, so every epoch reads the store again.

    .venv/bin/python bench/bench_object_store_input.py [--windows 4] [--records 25000] [--epochs 3]

Prints one JSON line; docs/BENCHMARKS.md has the figures. Nothing here is asserted by a test.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _example(i: int) -> bytes:
    import tensorflow as tf

    feature = {"id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"ev-{i:08d}".encode()])),
               "temperature": tf.train.Feature(float_list=tf.train.FloatList(value=[20.0 + i % 17])),
               "vibration": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5 * (i % 5)])),
               "humidity": tf.train.Feature(float_list=tf.train.FloatList(value=[40.0 + i % 11])),
               "device_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"dev-{i % 50:03d}".encode()])),
               "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _window_file(records: int, offset: int) -> bytes:
    import tensorflow as tf

    with tempfile.NamedTemporaryFile(suffix=".tfrecord.gz") as tmp:
        with tf.io.TFRecordWriter(tmp.name, options="GZIP") as writer:
            for i in range(offset, offset + records):
                writer.write(_example(i))
        with open(tmp.name, "rb") as handle:
            return handle.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--records", type=int, default=25_000, help="records per window")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    import tensorflow as tf
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from apache_beam.options.pipeline_options import PipelineOptions

    from core.window_staging import stage_windows
    from core.window_store import SealedWindow
    from tests import _procs

    work = tempfile.mkdtemp(prefix="ctpipe-bench-objstore-")
    service = _procs.moto_service(_procs.Path(work)).start()
    try:
        endpoint = f"http://{_procs.HOST}:{service.port}"
        os.environ.update(AWS_ACCESS_KEY_ID=_procs.S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=_procs.S3_SECRET_KEY)
        FileSystems.set_options(PipelineOptions([f"--s3_endpoint_url={endpoint}",
                                                 f"--s3_region_name={_procs.S3_REGION}"]))
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name=_procs.S3_REGION)
        client.create_bucket(Bucket="bench")
        windows, total_bytes = [], 0
        for w in range(args.windows):
            data = _window_file(args.records, w * args.records)
            total_bytes += len(data)
            wid = f"20261127T{w:02d}00Z"
            client.put_object(Bucket="bench", Key=f"store/windows/{wid}/v1/data-00000.tfrecord.gz", Body=data)
            windows.append(SealedWindow(wid, 1, f"s3://bench/store/windows/{wid}/v1", {"files": [
                {"path": "data-00000.tfrecord.gz", "kind": "transformed", "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest(), "records": args.records}]}))

        def count(dataset) -> int:
            return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _x: n + 1).numpy())

        started = time.perf_counter()
        staged = stage_windows(windows, os.path.join(work, "staged"), kinds=("transformed",))
        stage_s = time.perf_counter() - started
        files = [os.path.join(w.path, "data-00000.tfrecord.gz") for w in staged]
        epochs_local = []
        for _ in range(args.epochs):
            t = time.perf_counter()
            n_local = count(tf.data.TFRecordDataset(files, compression_type="GZIP"))
            epochs_local.append(time.perf_counter() - t)

        remote = [f"{w.path}/data-00000.tfrecord.gz" for w in windows]

        def records():
            for path in remote:
                with FileSystems.open(path, compression_type="gzip") as handle:
                    while (record := _TFRecordUtil.read_record(handle)) is not None:
                        yield record

        generator = tf.data.Dataset.from_generator(records, output_signature=tf.TensorSpec([], tf.string))
        epochs_remote = []
        for _ in range(args.epochs):
            t = time.perf_counter()
            n_remote = count(generator)
            epochs_remote.append(time.perf_counter() - t)
        assert n_local == n_remote == args.windows * args.records, (n_local, n_remote)
        total = args.windows * args.records
        print(json.dumps({
            "windows": args.windows, "records": total, "bytes": total_bytes, "epochs": args.epochs,
            "stage_s": round(stage_s, 2), "stage_epoch_s": [round(x, 2) for x in epochs_local],
            "stage_total_s": round(stage_s + sum(epochs_local), 2),
            "generator_epoch_s": [round(x, 2) for x in epochs_remote],
            "generator_total_s": round(sum(epochs_remote), 2),
            "stage_records_per_s_first_epoch": round(total / (stage_s + epochs_local[0])),
            "generator_records_per_s": round(total * args.epochs / sum(epochs_remote)),
        }, sort_keys=True))
    finally:
        service.stop()


if __name__ == "__main__":
    main()
