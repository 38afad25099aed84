"""Helpers shared by the stream end-to-end tests and bench/bench_stream.py: produce a known topic
(valid ids, bad messages, watermark markers) and audit a storage root against it."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import random
import subprocess
import sys
import threading
from dataclasses import dataclass, field

from kafka import KafkaProducer

from core import window_store
from transforms.pending import list_parts, read_part

RUN_TIMEOUT_S = 600
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERSIZE_LIMIT = 4000  # source.kafka.max_message_bytes used by these runs
MARKER_PREFIX = "marker-"


@dataclass
class Produced:
    valid_ids: list = field(default_factory=list)
    marker_ids: list = field(default_factory=list)
    bad: dict = field(default_factory=dict)

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())


def produce_topic(bootstrap: str, topic: str, n: int, partitions: int, seed: int = 11,
                  hours: int = 6, bad_each: int = 5) -> Produced:
    """``n`` unique valid events over ``hours`` event-time hours (in time order), ``bad_each``
    tombstones / non-UTF-8 / bad JSON / oversize values spread among them, then one marker event
    per partition one day later, so the watermark passes every window of the ``n`` events."""
    rng = random.Random(seed)
    start = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
    span_ms = hours * 3_600_000
    out = Produced(bad={"tombstone": 0, "not_utf8": 0, "bad_json": 0, "oversize": 0})
    bad_at = {int(n * (k + 1) / (4 * bad_each + 1)): kind
              for k, kind in enumerate([kind for kind in out.bad for _ in range(bad_each)])}
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    times = sorted(rng.randrange(span_ms) for _ in range(n))

    def send(partition, value, key=b"k"):
        producer.send(topic, key=key, value=value, partition=partition)

    for i, offset_ms in enumerate(times):
        partition = i % partitions
        if i in bad_at:
            kind = bad_at[i]
            out.bad[kind] += 1
            value = {"tombstone": None, "not_utf8": b"\xff\xfe\x00 not utf-8",
                     "bad_json": b'{"id": "broken", "ts": ',
                     "oversize": json.dumps({"id": f"big-{i}", "ts": 0, "pad": "x" * (OVERSIZE_LIMIT + 10)}).encode(),
                     }[kind]
            send(partition, value)
        ev_id = f"ev-{i:08d}"
        ts = start + dt.timedelta(milliseconds=offset_ms)
        send(partition, json.dumps({
            "id": ev_id, "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "device_id": f"dev-{rng.randrange(50):03d}", "firmware": rng.choice(["v1", "v2", "v3"]),
            "temperature": round(rng.gauss(60, 10), 3), "vibration": round(rng.lognormvariate(0, 0.4), 4),
            "humidity": round(rng.uniform(20, 80), 2), "label": rng.randrange(2)}).encode(),
            key=f"dev-{i % 50:03d}".encode())
        out.valid_ids.append(ev_id)
    for partition in range(partitions):
        marker = f"{MARKER_PREFIX}{partition}"
        ts = start + dt.timedelta(days=1)
        send(partition, json.dumps({"id": marker, "ts": ts.isoformat().replace("+00:00", "Z"), "device_id": "dev-000",
                                    "firmware": "v1", "temperature": 60.0, "vibration": 1.0, "humidity": 50.0,
                                    "label": 0}).encode())
        out.marker_ids.append(marker)
    producer.flush(timeout=60)
    producer.close()
    return out


@dataclass
class Audit:
    sealed_ids: list
    manifest_records: int
    pending_ids: list
    """ids in part files of windows not sealed yet"""
    dead_letters: dict
    windows: int


def sealed_ids(root: str) -> tuple[list, int, int]:
    """Ids in the raw TFRecords of every sealed window's newest version (read with tf.data), the
    sum of their MANIFEST record counts, and the number of windows."""
    import tensorflow as tf

    ids, records = [], 0
    sealed = window_store.list_sealed(root)
    for window in sealed:
        records += window.manifest["record_count"]
        dataset = tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP")
        for raw in dataset.as_numpy_iterator():
            example = tf.train.Example.FromString(raw)
            ids.append(example.features.feature["id"].bytes_list.value[0].decode())
    return ids, records, len(sealed)


def audit(root: str, sid: str) -> Audit:
    ids, records, windows = sealed_ids(root)
    sealed_windows = {w.window_id for w in window_store.list_sealed(root)}
    pending = sorted({e.id for wid, parts in list_parts(root, sid).items() if wid not in sealed_windows
                      for info in parts for e in read_part(info.path)})
    dead: dict = {}
    for path in glob.glob(os.path.join(root, "deadletter", "*", "*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    reason = json.loads(line)["reason"]
                    dead[reason] = dead.get(reason, 0) + 1
    return Audit(ids, records, pending, dead, windows)


def write_config(path: str, root: str, bootstrap: str, topic: str, split: int = 5000) -> str:
    import yaml

    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({
            "storage": {"root": root},
            "source": {"kafka": {"bootstrap_servers": bootstrap, "topic": topic, "group_id": f"g-{topic}",
                                 "max_message_bytes": OVERSIZE_LIMIT, "max_records_per_split": split}},
            "window": {"size": "1h", "allowed_lateness": "15m"},
            "validation": {"max_bad_fraction": 0.5},
        }, handle)
    return path


class StreamProcess:
    """``python -m pipeline.cli stream`` as a child process; its stdout lines are collected."""

    def __init__(self, config_path: str, *extra: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "stream", "--until-idle", "--json", "--config", config_path,
             *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def cycles_done(self) -> int:
        return sum(1 for line in self.lines if line.startswith("{"))

    def wait(self, timeout_s: float = RUN_TIMEOUT_S) -> int:
        rc = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=10)
        self.stderr = self.proc.stderr.read()
        return rc

    def kill9(self) -> bool:
        """SIGKILL if still running; True when the kill hit a running process."""
        if self.proc.poll() is not None:
            return False
        self.proc.kill()
        self.wait()
        return True


def sensor_message(ev_id: str, start: dt.datetime, minutes: int) -> tuple[bytes, bytes]:
    """(key, value) of one sensor event ``minutes`` after ``start`` (device dev-001)."""
    ts = (start + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    return (b"dev-001", json.dumps({"id": ev_id, "ts": ts, "device_id": "dev-001", "firmware": "v1",
                                    "temperature": 50.0 + minutes % 7, "vibration": 1.0, "humidity": 40.0,
                                    "label": minutes % 2}).encode())
