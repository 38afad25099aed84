"""Latencies: event -> sealed window (a live `ctpipe stream`), sealed window -> model pushed (`ctpipe train`).

    .venv/bin/python bench/bench_latency.py sealed [--seconds 200] [--rate 20] [--window 1m]
                                                   [--lateness 10s] [--interval 5]
    .venv/bin/python bench/bench_latency.py train [--hours 6] [--rows-per-hour 2000]

``sealed``: starts a local Apache Kafka broker (scripts/services.sh, as bench_stream.py does), a
one-partition topic, and a producer thread sending ``--rate`` valid sensor events per second whose
event time is the wall clock at the send, for ``--seconds``; one ``python -m pipeline.cli stream
--interval N --json`` process (a cycle every N seconds) reads it with short windows
(``window.size`` / ``allowed_lateness`` from the options). For every window first sealed (v1) while events
were still being produced: the seconds from its last event's send and from its end (wall clock =
event time here) to its MANIFEST.json's modification time, against the bound
``allowed_lateness + interval + the longest cycle`` (the goal: lateness + one cycle).

``train``: synthetic events -> ``python -m pipeline.cli backfill --json`` -> at once ``python -m
pipeline.cli train --json --force`` (``--force``: a first model is pushed even if the gate would not
bless it; the blessing is reported). Latency = the registry's push record (COMMITTED.json
``created_at``) minus the newest sealed window's MANIFEST.json modification time, with the train
process's wall time and the gap between the two commands.

Prints one JSON object.
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CLI = [sys.executable, "-m", "pipeline.cli"]


def _manifests(root: str) -> dict:
    """{window_id/vN: (manifest, mtime)} of the MANIFEST.json files under root's windows/."""
    out = {}
    for path in glob.glob(os.path.join(root, "windows", "*", "v*", "MANIFEST.json")):
        try:
            with open(path, encoding="utf-8") as handle:
                manifest = json.load(handle)
        except (OSError, ValueError):
            continue  # being published: read on the next poll
        out[os.path.relpath(os.path.dirname(path), os.path.join(root, "windows"))] = (manifest,
                                                                                        os.path.getmtime(path))
    return out


def _event(rng: random.Random, i: int, now_s: float) -> bytes:
    ts = dt.datetime.fromtimestamp(now_s, tz=dt.timezone.utc)
    return json.dumps({"id": f"lat-{i:08d}", "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                       "device_id": f"dev-{rng.randrange(50):03d}", "firmware": rng.choice(["v1", "v2", "v3"]),
                       "temperature": round(rng.gauss(60, 10), 3), "vibration": round(rng.lognormvariate(0, 0.4), 4),
                       "humidity": round(rng.uniform(20, 80), 2), "label": rng.randrange(2)}).encode()


def sealed_latency(args) -> dict:
    import yaml
    from kafka import KafkaProducer

    from pipeline.typed_config import duration_ms
    from tests import _procs
    from transforms.kafka.produce import ensure_topic

    size_ms, lateness_ms = duration_ms(args.window), duration_ms(args.lateness)
    if size_ms % 60_000:
        # core/layout.py names a window by its start to the minute: two windows of one minute collide.
        raise SystemExit(f"bench_latency: --window {args.window!r} is not a whole number of minutes; window ids "
                         f"have minute resolution (core/layout.py), use e.g. 1m or 2m")
    work = tempfile.mkdtemp(prefix="bench-latency-")
    broker = _procs.KafkaService(Path(work) / "services").start()
    stop = threading.Event()
    sent: dict[int, list] = {}  # window start ms -> [first send, last send, count]
    proc = None
    try:
        bootstrap = broker.env["CTPIPE_KAFKA_BOOTSTRAP"]
        topic = "latency-events"
        ensure_topic({"bootstrap_servers": bootstrap}, topic, 1)
        root = os.path.join(work, "store")
        config = os.path.join(work, "ctpipe.yaml")
        with open(config, "w", encoding="utf-8") as handle:
            yaml.safe_dump({"storage": {"root": root},
                            "source": {"kafka": {"bootstrap_servers": bootstrap, "topic": topic,
                                                 "group_id": "g-latency"}},
                            "window": {"size": args.window, "allowed_lateness": args.lateness},
                            "validation": {"max_bad_fraction": 0.5}}, handle)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        rng = random.Random(5)

        def produce():
            i, period = 0, 1.0 / args.rate
            next_at = time.time()
            while not stop.is_set():
                now = time.time()
                producer.send(topic, key=b"k", value=_event(rng, i, now))
                start_ms = int(now * 1000) // size_ms * size_ms
                entry = sent.setdefault(start_ms, [now, now, 0])
                entry[1], entry[2] = now, entry[2] + 1
                i += 1
                next_at += period
                time.sleep(max(0.0, next_at - time.time()))
            producer.flush(timeout=30)
            producer.close()

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        produce_started = time.time()
        log = open(os.path.join(work, "stream.log"), "w", encoding="utf-8")
        proc = subprocess.Popen([*CLI, "stream", "--interval", str(args.interval), "--json", "--config", config],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
        lines: list = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        deadline = produce_started + args.seconds
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        stream_rc_early = proc.poll()
        seen = _manifests(root)
        stop.set()
        thread.join(timeout=60)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the graceful stop of `ctpipe stream` (pipeline/lease.py)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=10)
        log.close()
    finally:
        stop.set()
        if proc is not None and proc.poll() is None:
            proc.kill()
        broker.stop()
    cycles = [json.loads(line) for line in lines if line.startswith("{")]
    if stream_rc_early is not None:
        with open(os.path.join(work, "stream.log"), encoding="utf-8", errors="replace") as handle:
            tail = handle.read()[-1500:]
        raise SystemExit(f"bench_latency: ctpipe stream exited {stream_rc_early} during the run: {tail}")
    cycle_seconds = [round(sum(c["seconds"].values()), 2) for c in cycles if c.get("seconds")]
    windows = []
    for key, (manifest, mtime) in sorted(seen.items()):
        entry = sent.get(manifest["start_ms"])
        if entry is None or manifest["version"] != 1:
            continue  # before the producer started, or a reseal by late data (not the first seal)
        windows.append({"window": key, "records": manifest["record_count"], "sent": entry[2],
                        "verdict": manifest["validation"]["verdict"],
                        "from_last_event_s": round(mtime - entry[1], 2),
                        "from_first_event_s": round(mtime - entry[0], 2),
                        "from_window_end_s": round(mtime - manifest["end_ms"] / 1000, 2)})
    steady = cycle_seconds[1:] or cycle_seconds
    bound = lateness_ms / 1000 + args.interval + (max(steady) if steady else 0.0)
    from_end = [w["from_window_end_s"] for w in windows]
    return {"window": args.window, "allowed_lateness": args.lateness, "interval_s": args.interval,
            "rate_per_s": args.rate, "seconds_produced": args.seconds, "cycles": len(cycles),
            "cycle_seconds": cycle_seconds, "first_cycles_phases_s": [c.get("seconds") for c in cycles[:3]],
            "windows_sealed": len(windows), "windows": windows,
            "from_window_end_s_median": round(statistics.median(from_end), 2) if from_end else None,
            "from_window_end_s_max": max(from_end) if from_end else None,
            "from_last_event_s_max": max((w["from_last_event_s"] for w in windows), default=None),
            "bound_lateness_interval_cycle_s": round(bound, 2),
            "bound_note": "allowed_lateness + interval + the longest cycle after the first (schema inference)",
            "within_bound": all(x <= bound for x in from_end) if from_end else None}


def train_latency(args) -> dict:
    import yaml

    from pipeline import synthetic

    work = tempfile.mkdtemp(prefix="bench-train-latency-")
    events = os.path.join(work, "events")
    synthetic.write_jsonl(events, synthetic.generate(dt.datetime(2026, 11, 27), args.hours, args.rows_per_hour,
                                                     malformed_per_hour=0, out_of_range_per_hour=0),
                          rows_per_hour=args.rows_per_hour)
    root, registry = os.path.join(work, "store"), os.path.join(work, "registry")
    config = os.path.join(work, "ctpipe.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"storage": {"root": root}, "source": {"files": {"uri": os.path.join(events, "*.jsonl")}},
                        "registry": {"uri": registry}}, handle)

    def run(*argv):
        started = time.time()
        done = subprocess.run([*CLI, *argv, "--json", "--config", config], cwd=REPO, capture_output=True,
                              text=True, timeout=args.max_seconds)
        if done.returncode != 0:
            raise SystemExit(f"bench_latency: ctpipe {argv[0]} exited {done.returncode}: {done.stderr[-1500:]}")
        return started, time.time(), json.loads(done.stdout)

    b_start, b_end, _ = run("backfill")
    t_start, t_end, outcome = run("train", "--force")
    seen = _manifests(root)
    newest_key, (newest, sealed_at) = max(seen.items(), key=lambda kv: kv[1][1])
    commits = glob.glob(os.path.join(registry, "**", "COMMITTED.json"), recursive=True)
    if not commits:
        raise SystemExit(f"bench_latency: ctpipe train pushed nothing under {registry}: {outcome}")
    with open(max(commits, key=os.path.getmtime), encoding="utf-8") as handle:
        committed = json.load(handle)
    pushed_at = dt.datetime.fromisoformat(committed["created_at"].replace("Z", "+00:00")).timestamp()
    return {"rows": args.hours * args.rows_per_hour, "windows": len(seen), "newest_window": newest_key,
            "backfill_seconds": round(b_end - b_start, 2), "gap_backfill_end_to_train_start_s": round(t_start - b_end, 2),
            "train_process_seconds": round(t_end - t_start, 2),
            "sealed_to_pushed_s": round(pushed_at - sealed_at, 2),
            "version": committed["version"], "blessed": bool(outcome.get("blessing", {}).get("blessed")),
            "training_seconds": outcome.get("training_seconds"), "epochs": outcome.get("epochs")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    s = sub.add_parser("sealed", help="event -> sealed window on a live topic")
    s.add_argument("--seconds", type=float, default=200.0, help="how long events are produced")
    s.add_argument("--rate", type=float, default=20.0, help="events per second")
    s.add_argument("--window", default="1m", help="window.size")
    s.add_argument("--lateness", default="10s", help="window.allowed_lateness")
    s.add_argument("--interval", type=int, default=5, help="ctpipe stream --interval SECONDS")
    t = sub.add_parser("train", help="sealed window -> model pushed")
    t.add_argument("--hours", type=int, default=6)
    t.add_argument("--rows-per-hour", type=int, default=2000)
    t.add_argument("--max-seconds", type=float, default=1800.0, help="per ctpipe command")
    args = parser.parse_args()
    out = sealed_latency(args) if args.part == "sealed" else train_latency(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
