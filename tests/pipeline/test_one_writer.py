"""backfill, stream and train started together on one storage root (real Apache Kafka broker,
DirectRunner, CPU training): they take turns on the root's lease, and nothing is lost or
counted twice.

The test holds the lease itself while the three start, so all three really contend: each says
on stderr that it waits, naming the test as the holder (train only once it has trained and
wants to publish). Then the test releases it. Afterwards every window holds exactly its
events (ids read back from the TFRecords), the registry is consistent with train's exit code,
and the lease's token counts every holding: the first backfill, the test, the second backfill,
each stream cycle and train's publish.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import yaml

from core import window_store
from core.lock import StorageLock
from pipeline import synthetic
from pipeline.cli.main import main
from tests._stream_check import sealed_ids
from transforms.kafka.produce import produce

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOURS, ROWS = 2, 150
TIMEOUT_S = 900


class Command:
    """``python -m pipeline.cli ARGS`` as a child; stdout and stderr lines collected by threads."""

    def __init__(self, *args: str):
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s, d), daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.err)

    def wait(self) -> int:
        code = self.proc.wait(timeout=TIMEOUT_S)
        for thread in self._threads:
            thread.join(timeout=30)
        return code


def _wait_for(predicate, what: str, commands) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        for command in commands:
            assert command.proc.poll() is None, f"{command.args} exited early: {''.join(command.err)[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not within {TIMEOUT_S} s"
        time.sleep(0.1)  # polling a condition, not waiting out a race


def _lines(start: dt.datetime, first_index: int):
    return list(synthetic.generate(start, HOURS, ROWS, seed=first_index + 1, malformed_per_hour=0,
                                   out_of_range_per_hour=0, first_index=first_index))


def _write(path, lines) -> list:
    path.mkdir(parents=True)
    (path / "events.jsonl").write_bytes(b"".join(line + b"\n" for line, _ in lines))
    return [ev["id"] for _, ev in lines]


def test_backfill_stream_and_train_on_one_root_take_turns_and_lose_nothing(tmp_path, kafka_broker, kafka_topic):
    root = str(tmp_path / "store")
    first = _write(tmp_path / "first", _lines(dt.datetime(2026, 11, 27), 0))
    second = _write(tmp_path / "second", _lines(dt.datetime(2026, 11, 26), 100_000))
    streamed_lines = _lines(dt.datetime(2026, 11, 28), 200_000)
    marker = dict(streamed_lines[-1][1], id="marker", ts="2026-11-28T06:00:00.000Z")  # moves the watermark on
    produce(kafka_broker.client_kwargs, kafka_topic,
            [(None, line) for line, _ in streamed_lines] + [(None, json.dumps(marker).encode())], partitions=1)
    streamed = [ev["id"] for _, ev in streamed_lines]
    config = tmp_path / "ctpipe.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"root": root},
        "source": {"files": {"uri": str(tmp_path / "first" / "*.jsonl")},
                   "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic}},
        "window": {"size": "1h", "allowed_lateness": "0s"},
        "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"},
        "training": {"epochs": 1, "backup_dir": str(tmp_path / "backup")},
    }))
    common = ("--config", str(config), "--lock-timeout", str(TIMEOUT_S))

    # windows to train on, the schema and a transform (in this process: only the three below contend)
    assert main(["backfill", *common]) == 0

    holder = StorageLock(root, command="test-holder").acquire()
    try:
        backfill = Command("backfill", "--input", str(tmp_path / "second" / "*.jsonl"), *common)
        stream = Command("stream", "--until-idle", "--json", *common)
        train = Command("train", *common)
        running = (backfill, stream, train)
        waiting = "for the storage root's lease, held by pid"
        _wait_for(lambda: all(c.said(waiting) and c.said("command test-holder") for c in running),
                  "every command waiting for the test's lease", running)
    finally:
        holder.release()
    codes = {c.args[0]: c.wait() for c in running}
    assert codes["backfill"] == 0, "".join(backfill.err)[-3000:]
    assert codes["stream"] == 0, "".join(stream.err)[-3000:]
    assert codes["train"] in (0, 10), "".join(train.err)[-3000:]

    # Nothing lost, nothing twice: every produced or backfilled id in exactly one sealed window.
    ids, records, windows = sealed_ids(root)
    counts = Counter(ids)
    assert not {i for i, c in counts.items() if c > 1}
    assert set(counts) == set(first) | set(second) | set(streamed)
    assert records == len(first) + len(second) + len(streamed) and windows == 3 * HOURS
    assert {w.window_id[:8] for w in window_store.list_sealed(root)} == {"20261126", "20261127", "20261128"}

    from training.registry import open_registry

    registry = open_registry(str(tmp_path / "registry"))
    versions = [v.version for v in registry.list_versions("sensors")]
    assert versions == ([1] if codes["train"] == 0 else [])
    assert registry.get_alias("sensors", "production") == (1 if codes["train"] == 0 else None)

    cycles = [json.loads(line) for line in stream.out if line.startswith("{")]
    record = StorageLock(root).owner()
    assert record["state"] == "released"
    # setup backfill, the test, the second backfill, every stream cycle, train's publish step
    assert record["token"] == 3 + len(cycles) + 1


def test_sigterm_mid_run_releases_the_lease_and_the_rerun_loses_nothing(tmp_path, kafka_broker, kafka_topic):
    """SIGTERM once the first cycle is done, while later cycles run back to back: the stream
    stops at a safe point with exit code 130 and the lease released; a rerun finishes the topic
    and every produced id is in exactly one window (sealed, or pending behind the watermark)."""
    from pipeline.checkpoint import CheckpointStore, source_id
    from tests._stream_check import audit

    root = str(tmp_path / "store")
    lines = _lines(dt.datetime(2026, 11, 28), 300_000)
    marker = dict(lines[-1][1], id="marker", ts="2026-11-28T06:00:00.000Z")
    produce(kafka_broker.client_kwargs, kafka_topic,
            [(None, line) for line, _ in lines] + [(None, json.dumps(marker).encode())], partitions=1)
    config = tmp_path / "ctpipe.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"root": root},
        "source": {"kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic,
                             "max_records_per_split": 50}},
        "window": {"size": "1h", "allowed_lateness": "0s"},
    }))
    stream = Command("stream", "--interval", "0.01", "--max-records-per-cycle", "60", "--json",
                     "--config", str(config))
    _wait_for(lambda: any(line.startswith("{") for line in stream.out), "the first cycle", [stream])
    stream.proc.send_signal(15)
    assert stream.wait() == 130, "".join(stream.err)[-3000:]
    assert any("SIGTERM: stopped" in line for line in stream.err), stream.err
    assert StorageLock(root).owner()["state"] == "released"

    rerun = Command("stream", "--until-idle", "--config", str(config), "--lock-timeout", "0")
    assert rerun.wait() == 0, "".join(rerun.err)[-3000:]
    result = audit(root, source_id(kafka_topic))
    # A schema inferred from the first small cycle may turn later records into dead letters
    # (e.g. a device id outside the inferred domain): they count as accounted for, once.
    dead = []
    for path in glob.glob(os.path.join(root, "deadletter", "*", "*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            dead += [json.loads(json.loads(line)["raw_utf8"])["id"] for line in handle if line.strip()]
    ids = Counter(result.sealed_ids + result.pending_ids + dead)
    assert not {i for i, c in ids.items() if c > 1}
    assert set(ids) == {ev["id"] for _, ev in lines} | {"marker"}
    assert CheckpointStore(root, kafka_topic).load().in_flight is None
