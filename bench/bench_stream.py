"""Benchmark: ``ctpipe stream`` end to end vs raw kafka-python consumption of the same topic.

Starts a local Apache Kafka broker (scripts/services.sh start kafka: single-node KRaft from the
pinned jars of jvm/engines.lock, PLAINTEXT listener used here), produces N unique events (plus
known bad messages and one watermark marker per partition), then in the same run:

1. raw: kafka-python KafkaConsumer, manual assign + seek to the beginning, poll until every
   partition's end offset: the consumption limit.
2. stream: ``python -m pipeline.cli stream --until-idle --json`` as a subprocess (cold start
   included), optionally killed with SIGKILL at ``--kills`` seeded random moments and restarted
   until idle; then the store is audited: ids across sealed windows vs produced valid ids
   (lost / duplicated), dead letters vs bad messages produced.

Prints one JSON object. Usage:

    /work/main/.venv/bin/python bench/bench_stream.py --n 100000 [--kills 3] [--max-records-per-cycle N]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from kafka import KafkaConsumer, TopicPartition  # noqa: E402

from tests import _procs  # noqa: E402
from tests._stream_check import audit, produce_topic, write_config  # noqa: E402


def raw_consume(bootstrap: str, topic: str, ends: dict) -> tuple[int, float]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in sorted(ends)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    started = time.perf_counter()
    count = 0
    positions = {tp: 0 for tp in tps}
    while any(positions[tp] < ends[tp.partition] for tp in tps):
        for tp, records in consumer.poll(timeout_ms=500, max_records=10_000).items():
            count += len(records)
            positions[tp] = records[-1].offset + 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return count, elapsed


def run_stream(config: str, extra: list, kills: int, seed: int) -> dict:
    from tests._stream_check import StreamProcess

    rng = random.Random(seed)
    started = time.perf_counter()
    landed, runs, cycles = 0, 0, []
    while landed < kills:
        runs += 1
        proc = StreamProcess(config, *extra)
        kill_at = time.monotonic() + rng.uniform(5.0, 60.0)
        while time.monotonic() < kill_at and proc.proc.poll() is None:
            time.sleep(0.05)
        cycles += [json.loads(line) for line in proc.lines if line.startswith("{")]
        if proc.kill9():
            landed += 1
        else:
            break
    proc = StreamProcess(config, *extra)
    rc = proc.wait()
    runs += 1
    cycles += [json.loads(line) for line in proc.lines if line.startswith("{")]
    if rc != 0:
        raise SystemExit(f"ctpipe stream exited {rc}: {proc.stderr[-3000:]}")
    return {"seconds": time.perf_counter() - started, "kills_landed": landed, "processes": runs,
            "cycles": [{k: c[k] for k in ("cycle", "replayed", "records", "seconds")} for c in cycles if c["records"]]}


def _stream_summary(stream: dict, runner_config, result, produced, messages: int, raw_rows_s: float) -> dict:
    counts = Counter(result.sealed_ids)
    stream_rows_s = messages / stream["seconds"]
    in_cycle_s = sum(sum(c["seconds"].values()) for c in stream["cycles"])
    return {
        "runner_config": runner_config or "runner_configs/direct.yaml",
        "ctpipe_stream": {"seconds_wall": round(stream["seconds"], 2), "rows_per_s_wall": round(stream_rows_s),
                          "seconds_in_cycles": round(in_cycle_s, 2),
                          "rows_per_s_in_cycles": round(messages / in_cycle_s) if in_cycle_s else None,
                          "kills_landed": stream["kills_landed"], "processes": stream["processes"],
                          "cycles": stream["cycles"]},
        "ratio_stream_over_raw_wall": round(stream_rows_s / raw_rows_s, 4),
        "audit": {"sealed_ids": len(result.sealed_ids), "lost": len(set(produced.valid_ids) - set(counts)),
                  "duplicated": sum(c - 1 for c in counts.values() if c > 1),
                  "windows": result.windows, "dead_letters": result.dead_letters,
                  "dead_letters_expected": {k: v for k, v in produced.bad.items() if v},
                  "pending_unsealed_ids": len(result.pending_ids)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--kills", type=int, default=0)
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--max-records-per-cycle", type=int, default=500_000)
    parser.add_argument("--split", type=int, default=20_000, help="source.kafka.max_records_per_split")
    parser.add_argument("--runner-config", action="append", default=[],
                        help="run ctpipe stream with this --runner-config too, each in a store of its own over "
                             "the same topic (repeatable; default: the config's runner, runner_configs/direct.yaml)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench-stream-")
    broker = _procs.KafkaService(Path(work) / "services").start()
    try:
        bootstrap = broker.env["CTPIPE_KAFKA_BOOTSTRAP"]
        topic = "bench-events"
        from transforms.kafka.produce import ensure_topic
        from transforms.kafka.source import end_offsets

        ensure_topic({"bootstrap_servers": bootstrap}, topic, args.partitions)
        t = time.perf_counter()
        produced = produce_topic(bootstrap, topic, args.n, args.partitions, bad_each=5)
        produce_s = time.perf_counter() - t
        ends = end_offsets({"bootstrap_servers": bootstrap}, topic)
        messages = sum(ends.values())
        raw_count, raw_s = raw_consume(bootstrap, topic, ends)
        from pipeline.checkpoint import source_id

        runs = []
        for index, runner_config in enumerate(args.runner_config or [None]):
            root = os.path.join(work, f"store-{index}")
            config = write_config(os.path.join(work, f"ctpipe-{index}.yaml"), root, bootstrap, topic,
                                  split=args.split)
            extra = ["--max-records-per-cycle", str(args.max_records_per_cycle)]
            if runner_config:
                extra += ["--runner-config", runner_config]
            stream = run_stream(config, extra, args.kills, args.seed)
            runs.append(_stream_summary(stream, runner_config, audit(root, source_id(topic)), produced, messages,
                                        raw_count / raw_s))
        print(json.dumps({
            "n_valid": len(produced.valid_ids), "bad_produced": produced.bad, "messages": messages,
            "partitions": args.partitions, "produce_s": round(produce_s, 2),
            "raw_kafka_python": {"records": raw_count, "seconds": round(raw_s, 3),
                                 "rows_per_s": round(raw_count / raw_s)},
            # the first run under the names earlier results used; every run in "runs"
            "ctpipe_stream": runs[0]["ctpipe_stream"],
            "ratio_stream_over_raw_wall": runs[0]["ratio_stream_over_raw_wall"],
            "audit": runs[0]["audit"], "runs": runs,
        }, indent=2, sort_keys=True))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
