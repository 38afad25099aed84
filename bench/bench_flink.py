"""Benchmark: ``ctpipe backfill`` on the local Apache Flink cluster vs DirectRunner, same input.

Starts a local Flink 1.19 session cluster (a JobManager and two TaskManagers) and Beam's Flink job
server with scripts/services.sh in a temporary state dir, writes N synthetic events, then in the
same run backfills them into separate storage roots with:

1. ``direct``: runner_configs/direct.yaml (DirectRunner, one process);
2. ``flink-loopback``: runner_configs/flink-local.yaml (Python workers inside the ctpipe process);
3. ``flink-worker-pool`` (with ``--worker-pool``): the same with ``environment_type: EXTERNAL``
   against a Beam worker pool (``python -m apache_beam.runners.worker.worker_pool_main``), so
   the Python work of the two parallel subtasks runs in worker processes of their own.

Each backfill is ``python -m pipeline.cli backfill --json`` as a subprocess: wall clock includes
the process start, TensorFlow's import, schema inference (a first Beam job) and, on Flink, the
job submission. Every Flink root must hold the same window files (sha256) as DirectRunner's.
Prints one JSON object. Usage:

    /work/main/.venv/bin/python bench/bench_flink.py --rows-per-hour 10000 --hours 2 [--worker-pool]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from pipeline import synthetic  # noqa: E402
from tests import _procs  # noqa: E402
from tests._stores import tree_digest  # noqa: E402


def backfill(work: Path, name: str, events: str, runner_config: str, env: dict) -> dict:
    config = work / f"{name}.yaml"
    config.write_text(json.dumps({"storage": {"root": str(work / name)}, "source": {"files": {"uri": events}},
                                  "registry": {"uri": str(work / f"{name}-registry"), "model_name": "sensors"}}))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "--json", "--config", str(config),
                           "--runner-config", runner_config], capture_output=True, text=True,
                          env={**os.environ, **env, "PYTHONPATH": REPO}, timeout=3600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: backfill failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    record = json.loads(done.stdout)
    return {"seconds": round(elapsed, 1), "records_in": record["counters"]["records_in"],
            "rows_per_s": round(record["counters"]["records_in"] / elapsed, 1),
            "windows": len(record["windows"]), "digest": tree_digest(str(work / name))}


def start_worker_pool(log: Path) -> tuple[subprocess.Popen, int]:
    port = _procs.free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                 f"--service_port={port}"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": REPO}, start_new_session=True)
    deadline = time.monotonic() + 120
    while not _procs.port_accepts(_procs.HOST, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the Beam worker pool did not listen on {port}; see {log}")
        time.sleep(0.1)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=int, default=2)
    parser.add_argument("--rows-per-hour", type=int, default=10000)
    parser.add_argument("--worker-pool", action="store_true", help="also run with an EXTERNAL Beam worker pool")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctpipe-bench-flink-"))
    stats = synthetic.write_jsonl(str(work / "events"), synthetic.generate(
        dt.datetime(2026, 11, 27), args.hours, args.rows_per_hour), rows_per_hour=args.rows_per_hour + 3)
    events = str(work / "events" / "*.jsonl")
    out = {"rows": stats.valid + stats.malformed, "work": str(work)}
    out["direct"] = backfill(work, "direct", events, os.path.join(REPO, "runner_configs", "direct.yaml"), {})

    flink = _procs.FlinkService(work / "services").start()
    pool = None
    try:
        env = {"CTPIPE_FLINK_MASTER": flink.env["CTPIPE_FLINK_MASTER"],
               "CTPIPE_BEAM_JOB_ENDPOINT": flink.env["CTPIPE_BEAM_JOB_ENDPOINT"]}
        local = os.path.join(REPO, "runner_configs", "flink-local.yaml")
        out["flink-loopback"] = backfill(work, "flink-loopback", events, local, env)
        if args.worker_pool:
            pool, port = start_worker_pool(work / "worker-pool.log")
            external = work / "flink-worker-pool.yaml"
            text = Path(local).read_text().replace("environment_type: LOOPBACK",
                                                   f"environment_type: EXTERNAL\nenvironment_config: 127.0.0.1:{port}")
            external.write_text(text)
            out["flink-worker-pool"] = backfill(work, "flink-worker-pool", events, str(external), env)
    finally:
        if pool is not None:
            pool.terminate()
            pool.wait(timeout=30)
        flink.stop()
    reference = out["direct"].pop("digest")
    for name in ("flink-loopback", "flink-worker-pool"):
        if name in out:
            out[name]["identical_to_direct"] = out[name].pop("digest") == reference
            out[name]["ratio_to_direct"] = round(out[name]["rows_per_s"] / out["direct"]["rows_per_s"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
