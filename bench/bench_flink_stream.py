"""Benchmark: ``ctpipe stream --unbounded`` on the local Apache Flink cluster vs raw kafka-python
consumption of the same topic, in one run.

Starts a local Apache Kafka broker, a Flink 1.19 session cluster (a JobManager and two
TaskManagers), Beam's Flink job server and the Java expansion service for KafkaIO, all with
scripts/services.sh in a temporary state dir. Produces N valid events (event times in order over
``--hours`` hours ending two hours ago, Kafka timestamps = event times, round-robin over the
partitions) and then one marker per partition two hours after the last event, so the watermark
(the records' CreateTime) passes every window. Then:

1. raw: kafka-python KafkaConsumer, manual assign + seek to the beginning, poll until every
   partition's end offset (the consumption limit, no processing);
2. flink: a backfill of a small seed file publishes the schema and transform (DirectRunner), then
   ``python -m pipeline.cli stream --unbounded`` submits the unbounded graph with
   runner_configs/flink-local-streaming.yaml (LOOPBACK) and, with ``--worker-pool``, then again
   (its own root and consumer group, the same topic) with runner_configs/flink-local-streaming-pool.yaml
   against a Beam worker pool (``python -m apache_beam.runners.worker.worker_pool_main``); the clock runs from
   the moment Flink's REST API lists the job RUNNING until the sealed windows' manifests count
   all N events. Then the job is cancelled in Flink and every produced id is checked to be in
   exactly one sealed window (raw TFRecords read with tf.data).

Prints one JSON object. Usage:

    /work/main/.venv/bin/python bench/bench_flink_stream.py --n 20000 [--worker-pool]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from kafka import KafkaProducer  # noqa: E402

from bench.bench_flink import start_worker_pool  # noqa: E402
from bench.bench_stream import raw_consume  # noqa: E402
from core import window_store  # noqa: E402
from tests import _procs  # noqa: E402
from tests._stream_check import sealed_ids  # noqa: E402

WINDOW = "1h"


def _event(i: int, ts_s: float, prefix: str = "ev") -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_s)) + f".{int(ts_s * 1000) % 1000:03d}Z"
    return json.dumps({"id": f"{prefix}-{i:08d}", "ts": ts, "device_id": f"dev-{i % 50:03d}", "firmware": "v1",
                       "temperature": 50.0 + i % 17, "vibration": 1.0 + (i % 7) / 10, "humidity": 40.0 + i % 5,
                       "label": i % 2}).encode()


def produce(bootstrap: str, topic: str, n: int, partitions: int, hours: int) -> tuple[list, float]:
    """N events in event-time order, then one marker per partition; returns (valid ids, last event time)."""
    end = (int(time.time()) // 3600 - 2) * 3600
    start = end - hours * 3600
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    ids = []
    for i in range(n):
        ts = start + (i + 0.5) * hours * 3600 / n
        producer.send(topic, value=_event(i, ts), key=f"dev-{i % 50:03d}".encode(), partition=i % partitions,
                      timestamp_ms=int(ts * 1000))
        ids.append(f"ev-{i:08d}")
    marker = end + 2 * 3600
    for p in range(partitions):
        producer.send(topic, value=_event(p, marker, "marker"), key=b"marker", partition=p,
                      timestamp_ms=marker * 1000)
    producer.flush(timeout=120)
    producer.close()
    return ids, start


def _rest(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def _wait(what: str, condition, timeout_s: float, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")


def sealed_count(root: str) -> int:
    """Records in the newest sealed version of every window (manifest counts). The markers'
    window stays open: the watermark reaches the markers' time, not their window's end."""
    return sum(w.manifest["record_count"] for w in window_store.list_sealed(root))


def run_unbounded(work: Path, name: str, flink, bootstrap: str, topic: str, runner_config: str, seed_start: float,
                  n: int) -> dict:
    """One unbounded job (its own storage root and consumer group) over the whole topic."""
    root = work / name / "store"
    (work / name).mkdir()
    seed = work / name / "seed.jsonl"
    seed.write_bytes(b"".join(_event(900_000 + i, seed_start - 3 * 3600 + i * 60, "seed") + b"\n" for i in range(60)))
    config = work / name / "ctpipe.yaml"
    config.write_text(json.dumps({
        "storage": {"root": str(root)}, "source": {"files": {"uri": str(seed)}, "kafka": {
            "bootstrap_servers": bootstrap, "topic": topic, "group_id": f"g-{name}",
            "expansion_service": flink.env["CTPIPE_BEAM_KAFKA_EXPANSION_ENDPOINT"]}},
        "window": {"size": WINDOW, "allowed_lateness": "15m"},
        "registry": {"uri": str(work / name / "registry"), "model_name": "sensors"}}))
    env = {**os.environ, "PYTHONPATH": REPO, "CTPIPE_FLINK_MASTER": flink.env["CTPIPE_FLINK_MASTER"],
           "CTPIPE_BEAM_JOB_ENDPOINT": flink.env["CTPIPE_BEAM_JOB_ENDPOINT"]}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "--config", str(config),
                           "--runner-config", os.path.join(REPO, "runner_configs", "direct.yaml")],
                          env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"seed backfill failed: {done.stderr[-3000:]}")
    seeded = sealed_count(str(root))
    rest = flink.env["CTPIPE_FLINK_REST_URL"]
    submitted = time.perf_counter()
    job = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stream", "--unbounded", "--json", "--config",
                            str(config), "--runner-config", runner_config], env=env, stdout=subprocess.PIPE,
                           stderr=open(work / name / "job.err", "w"), text=True)
    try:
        def running():
            jobs = [j["jid"] for j in _rest(f"{rest}/jobs/overview")["jobs"] if j["state"] == "RUNNING"]
            return jobs[0] if jobs else None
        jid = _wait("the unbounded job to run on Flink", running, 600)
        started = time.perf_counter()
        _wait(f"{n} events sealed", lambda: sealed_count(str(root)) - seeded >= n, 1800, 1.0)
        drained = time.perf_counter()
    finally:
        jid = running()
        if jid:
            urllib.request.urlopen(urllib.request.Request(f"{rest}/jobs/{jid}?mode=cancel", method="PATCH"),
                                   timeout=10).read()
        try:
            job.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            job.kill()
            job.communicate()
    ids = Counter(i for i in sealed_ids(str(root))[0] if i.startswith("ev-"))
    return {"submit_to_running_s": round(started - submitted, 1), "drain_s": round(drained - started, 2),
            "events_per_s": round(n / (drained - started)), "sealed_ids": len(ids), "lost": n - len(ids),
            "duplicated": sum(c - 1 for c in ids.values() if c > 1), "exit_code": job.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--hours", type=int, default=2)
    parser.add_argument("--worker-pool", action="store_true",
                        help="then the same job with the Python workers in an EXTERNAL Beam worker pool")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctpipe-bench-flink-stream-"))
    broker = _procs.KafkaService(work / "services").start()
    flink = pool = None
    try:
        bootstrap = broker.env["CTPIPE_KAFKA_BOOTSTRAP"]
        topic = "bench-unbounded"
        from transforms.kafka.produce import ensure_topic
        from transforms.kafka.source import end_offsets

        ensure_topic({"bootstrap_servers": bootstrap}, topic, args.partitions)
        t = time.perf_counter()
        _ids, first_ts = produce(bootstrap, topic, args.n, args.partitions, args.hours)
        produce_s = time.perf_counter() - t
        ends = end_offsets({"bootstrap_servers": bootstrap}, topic)
        raw_count, raw_s = raw_consume(bootstrap, topic, ends)
        flink = _procs.FlinkService(work / "services", expansion=True).start()
        loopback = os.path.join(REPO, "runner_configs", "flink-local-streaming.yaml")
        raw_rate = raw_count / raw_s
        out = {"n": args.n, "messages": sum(ends.values()), "partitions": args.partitions,
               "produce_s": round(produce_s, 2),
               "raw_kafka_python": {"records": raw_count, "seconds": round(raw_s, 3), "rows_per_s": round(raw_rate)}}
        out["flink_loopback"] = run_unbounded(work, "loopback", flink, bootstrap, topic, loopback, first_ts, args.n)
        if args.worker_pool:
            pool, port = start_worker_pool(work / "worker-pool.log")
            os.environ["CTPIPE_BEAM_WORKER_POOL_ENDPOINT"] = f"127.0.0.1:{port}"
            external = os.path.join(REPO, "runner_configs", "flink-local-streaming-pool.yaml")
            run = run_unbounded(work, "worker-pool", flink, bootstrap, topic, external, first_ts, args.n)
            run["sdk_workers_started"] = (work / "worker-pool.log").read_text(errors="replace").count("Starting worker")
            out["flink_worker_pool"] = run
        for name in ("flink_loopback", "flink_worker_pool"):
            if name in out:
                out[name]["ratio_to_raw"] = round(out[name]["events_per_s"] / raw_rate, 4)
        out["work"] = str(work)
        print(json.dumps(out, indent=2, sort_keys=True))
    finally:
        if pool is not None:
            pool.terminate()
            pool.wait(timeout=30)
        if flink is not None:
            flink.stop()
        broker.stop()


if __name__ == "__main__":
    main()
