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
job submission; Flink's REST API must list the new jobs as FINISHED. Every Flink root must hold the
same window files (sha256) as DirectRunner's (with --no-direct: as flink-loopback's).
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


def flink_jobs(rest_url: str) -> dict:
    """Flink's own record of the Beam jobs it ran (job id -> state), from its REST API."""
    import urllib.request

    with urllib.request.urlopen(f"{rest_url}/jobs/overview", timeout=10) as resp:
        return {j["jid"]: j["state"] for j in json.load(resp)["jobs"] if j["name"].startswith("BeamApp-")}


def on_flink(work, name, events, runner_config, env, rest_url) -> dict:
    """A backfill that must run on the cluster: the jobs Flink lists before and after it."""
    before = flink_jobs(rest_url)
    result = backfill(work, name, events, runner_config, env)
    new = {jid: state for jid, state in flink_jobs(rest_url).items() if jid not in before}
    if not new or set(new.values()) != {"FINISHED"}:
        raise SystemExit(f"{name}: the backfill did not run as FINISHED Flink jobs (new jobs: {new})")
    result["flink_jobs"] = len(new)
    return result


def start_worker_pool(log: Path) -> tuple[subprocess.Popen, int]:
    port = _procs.free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                 f"--service_port={port}"], stdout=out, stderr=subprocess.STDOUT,
                                # it starts each SDK worker as `python`: this interpreter's, not PATH's
                                env={**os.environ, "PYTHONPATH": REPO,
                                     "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"},
                                start_new_session=True)
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
    parser.add_argument("--no-direct", action="store_true",
                        help="skip the DirectRunner run; the Flink runs are compared with flink-loopback")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ctpipe-bench-flink-"))
    stats = synthetic.write_jsonl(str(work / "events"), synthetic.generate(
        dt.datetime(2026, 11, 27), args.hours, args.rows_per_hour), rows_per_hour=args.rows_per_hour + 3)
    events = str(work / "events" / "*.jsonl")
    out = {"rows": stats.valid + stats.malformed, "work": str(work)}
    if not args.no_direct:
        out["direct"] = backfill(work, "direct", events, os.path.join(REPO, "runner_configs", "direct.yaml"), {})

    flink = _procs.FlinkService(work / "services").start()
    pool = None
    try:
        env = {"CTPIPE_FLINK_MASTER": flink.env["CTPIPE_FLINK_MASTER"],
               "CTPIPE_BEAM_JOB_ENDPOINT": flink.env["CTPIPE_BEAM_JOB_ENDPOINT"]}
        local = os.path.join(REPO, "runner_configs", "flink-local.yaml")
        rest = flink.env["CTPIPE_FLINK_REST_URL"]
        out["flink-loopback"] = on_flink(work, "flink-loopback", events, local, env, rest)
        if args.worker_pool:
            pool, port = start_worker_pool(work / "worker-pool.log")
            external = work / "runner-flink-worker-pool.yaml"  # not <name>.yaml: that is the ctpipe config
            text = Path(local).read_text().replace("environment_type: LOOPBACK",
                                                   f"environment_type: EXTERNAL\nenvironment_config: 127.0.0.1:{port}")
            external.write_text(text)
            out["flink-worker-pool"] = on_flink(work, "flink-worker-pool", events, str(external), env, rest)
            out["flink-worker-pool"]["sdk_workers_started"] = (work / "worker-pool.log").read_text(
                errors="replace").count("Starting worker")
    finally:
        if pool is not None:
            pool.terminate()
            pool.wait(timeout=30)
        flink.stop()
    base = "flink-loopback" if args.no_direct else "direct"
    reference = out[base]["digest"]
    for name in ("flink-loopback", "flink-worker-pool"):
        if name in out and name != base:
            out[name][f"identical_to_{base}"] = out[name]["digest"] == reference
            out[name][f"ratio_to_{base}"] = round(out[name]["rows_per_s"] / out[base]["rows_per_s"], 2)
    for run in out.values():
        if isinstance(run, dict):
            run.pop("digest", None)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
