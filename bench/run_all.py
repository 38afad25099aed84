"""The whole benchmark table in one command: backfill at several sizes vs the peers (seconds, rows/s,
peak RSS), the Kafka stream vs raw kafka-python consumption, and the two latencies.

    .venv/bin/python bench/run_all.py [--sizes 200000,1000000,5000000] [--max-seconds 3600]
                                      [--stream-n 100000] [--skip stream,latency,train]   # or: make bench-all

Parts, each a child process, so one that fails, runs out of memory or past --max-seconds is a row
with its reason in the table, not a crash of this harness:

1. backfill, per size: bench/bench_backfill.py (ctpipe, the TFX-style peer on instance dicts with and
   without the baseline's TFDV statistics, the RecordBatch peer; each pipeline in its own process).
2. stream: bench/bench_stream.py --n N (its own Apache Kafka broker; ctpipe stream --until-idle vs
   raw kafka-python on the same topic).
3. latency: bench/bench_latency.py sealed (event -> sealed window on a live topic).
4. train: bench/bench_latency.py train (sealed window -> model pushed).

Writes bench/results/<UTC date and time>.json and replaces the table between the markers
``<!-- bench-all:begin -->`` and ``<!-- bench-all:end -->`` in docs/BENCHMARKS.md (added at the end
if absent), with the exact command, the date, the machine and its load average. ``--render FILE``
rewrites that block from an earlier results file without running anything.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

import bench_backfill  # noqa: E402

BEGIN, END = "<!-- bench-all:begin -->", "<!-- bench-all:end -->"
PARTS = ("backfill", "stream", "latency", "train")
PEER_LABELS = {
    "ctpipe": "ctpipe backfill, one core (first run, schema inference included)",
    "ctpipe_every_core": "ctpipe backfill, every core (runner_configs/direct-multiprocess.yaml)",
    "tfx_dicts": "TFX-style peer: instance dicts → TFT → ExampleProtoCoder → TFRecord",
    "tfx_dicts_stats": "the same + the baseline's TFDV stats over a ToList of every row",
    "recordbatch": "the same tf.Transform work on Arrow RecordBatches (TensorAdapterConfig, output_record_batches, RecordBatchToExamples)",
}


def run_json(argv: list, max_seconds: float, log_path: str) -> dict:
    """Run a bench script that prints one JSON object on stdout; {status, result | reason, seconds}."""
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            done = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                                  timeout=max_seconds)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "reason": f"killed after --max-seconds {max_seconds:g}", "log": log_path,
                    "seconds": round(time.perf_counter() - started, 1)}
    seconds = round(time.perf_counter() - started, 1)
    if done.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            tail = [line for line in handle.read().splitlines() if line.strip()][-3:]
        return {"status": "failed", "reason": f"exit {done.returncode}: " + " | ".join(tail)[-600:],
                "log": log_path, "seconds": seconds}
    start = done.stdout.find("{")
    try:
        return {"status": "ok", "result": json.loads(done.stdout[start:]), "log": log_path, "seconds": seconds}
    except ValueError as exc:
        return {"status": "failed", "reason": f"unreadable JSON on stdout ({exc})", "log": log_path,
                "seconds": seconds}


def machine() -> dict:
    mem_gb = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            mem_gb = round(int(handle.readline().split()[1]) / 1024 ** 2, 1)
    except (OSError, ValueError, IndexError):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True)
    return {"cpus": os.cpu_count(), "mem_gb": mem_gb, "python": platform.python_version(),
            "platform": platform.platform(), "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")}


def _fmt(value, digits=0) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}"
    return str(value)


def _cycles(seconds: list) -> str:
    if not seconds:
        return "no cycle reported"
    rest = sorted(seconds[1:])
    text = f"{len(seconds)} cycles: the first {seconds[0]} s"
    if rest:
        text += f", the others median {rest[len(rest) // 2]} s, max {rest[-1]} s"
    return text


def _part_row(part: dict, name: str, ok_row) -> str:
    """One table row of a bench part: ``ok_row(result)``, or the part's status and reason."""
    if part["status"] != "ok":
        return f"| {name} | **{part['status']}** | {part['reason']} |"
    return ok_row(part["result"])


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [BEGIN, "", "## The whole table (`bench/run_all.py`)", "", "```", doc["command"], "```", "",
             f"{doc['started']} – {doc['finished']} UTC, commit {m['commit']}, {m['cpus']} CPUs, {m['mem_gb']} GiB, "
             f"Python {m['python']}; load average (1/5/15 min) {'/'.join(str(x) for x in doc['load_before'])} at the "
             f"start and {'/'.join(str(x) for x in doc['load_after'])} at the end. Sizes: "
             f"{', '.join(f'{s:,}' for s in doc['sizes'])} rows. Raw figures: `{doc['results_file']}`.", ""]
    if doc.get("note"):
        lines += [doc["note"], ""]
    if "backfill" in doc["parts"]:
        lines += ["### Backfill (DirectRunner, each pipeline in its own process, same JSONL input)", "",
                  "| rows | pipeline | status | seconds | rows/s | peak RSS MB | all processes: peak RSS / PSS MB "
                  "| one-core ctpipe ÷ this | every-core ctpipe ÷ this |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for size in doc["backfill"]:
            res = size["result"]
            rows = res.get("rows", size["size"])
            if res.get("error"):
                lines.append(f"| {rows:,} | (input) | failed | – | – | – | {res['error']} |")
                continue
            ratios = {ctpipe: res.get(f"ratios_{ctpipe}_over", {}) for ctpipe in ("ctpipe", "ctpipe_every_core")}
            for name, p in res["pipelines"].items():
                status = p["status"] if p["status"] == "ok" else f"**{p['status']}**: {p.get('reason', '')}"
                ratio = {ctpipe: "1.00" if name == ctpipe and p["status"] == "ok" else _fmt(ratios[ctpipe].get(name), 2)
                         for ctpipe in ratios}
                lines.append(f"| {rows:,} | {PEER_LABELS[name]} | {status} | {_fmt(p.get('seconds'), 1)} | "
                             f"{_fmt(p.get('rows_per_s'))} | {_fmt(p.get('peak_rss_mb'))} | "
                             f"{_fmt(p.get('group_peak_rss_mb'))} / {_fmt(p.get('group_peak_pss_mb'))} | "
                             f"{ratio['ctpipe']} | {ratio['ctpipe_every_core']} |")
        lines += ["", "Seconds: the pipeline alone inside its process (Beam graph built, run and finished; "
                  "not the interpreter start and imports). Peak RSS: `ru_maxrss` of that process (os.wait4); "
                  "all processes: the peaks of RSS and PSS summed over its process group (its forkserver "
                  "helper and SDK workers included), sampled every 0.25 s. PSS counts a page shared by "
                  "forked workers once.", ""]
    if "stream" in doc["parts"]:
        s = doc["stream"]
        lines += ["### Stream (Kafka micro-batches, `ctpipe stream --until-idle`) vs raw kafka-python", ""]
        if s["status"] != "ok":
            lines += [f"**{s['status']}**: {s['reason']}", ""]
        else:
            r = s["result"]
            raw = r["raw_kafka_python"]
            lines += ["| reader | records | seconds | rows/s | ratio to raw |", "| --- | --- | --- | --- | --- |",
                      f"| raw kafka-python (assign + seek, no processing) | {raw['records']:,} | {raw['seconds']} | "
                      f"{raw['rows_per_s']:,} | 1.00 |"]
            runs = r.get("runs") or [{"runner_config": "runner_configs/direct.yaml",  # results before "runs"
                                      "ctpipe_stream": r["ctpipe_stream"], "audit": r["audit"],
                                      "ratio_stream_over_raw_wall": r["ratio_stream_over_raw_wall"]}]
            for run in runs:
                cs, name = run["ctpipe_stream"], run["runner_config"]
                inside = cs["rows_per_s_in_cycles"]
                lines += [f"| `ctpipe stream` ({name}), wall clock incl. process start | {r['messages']:,} | "
                          f"{cs['seconds_wall']} | {cs['rows_per_s_wall']:,} | {run['ratio_stream_over_raw_wall']} |",
                          f"| `ctpipe stream` ({name}), inside the cycles | {r['messages']:,} | "
                          f"{cs['seconds_in_cycles']} | {_fmt(inside)} | "
                          f"{_fmt(inside / raw['rows_per_s'] if inside else None, 3)} |"]
            lines += ["", f"{r['n_valid']:,} valid events + {sum(r['bad_produced'].values())} bad messages on "
                      f"{r['partitions']} partitions."]
            for run in runs:
                a = run["audit"]
                phases = "; ".join(
                    f"{c['records']:,}: " + ", ".join(f"{k} {v:g}" for k, v in sorted(c["seconds"].items()) if v >= 0.05)
                    for c in run["ctpipe_stream"]["cycles"])
                lines.append(f"{run['runner_config']}: audit {a['lost']} lost, {a['duplicated']} duplicated, dead "
                             f"letters {a['dead_letters']} (expected {a['dead_letters_expected']}); cycles (records: "
                             f"seconds per phase): {phases}.")
            lines.append("")
    if "latency" in doc["parts"] or "train" in doc["parts"]:
        lines += ["### Latencies", "", "| latency | figure | detail |", "| --- | --- | --- |"]
        if "latency" in doc["parts"]:
            lines.append(_part_row(doc["latency"], "event → sealed window", lambda r: (
                f"| event → sealed window (from the window's end; = its last event, event time = wall clock) | "
                f"median {r['from_window_end_s_median']} s, max {r['from_window_end_s_max']} s over "
                f"{r['windows_sealed']} windows | window {r['window']}, allowed_lateness {r['allowed_lateness']}, "
                f"`ctpipe stream --interval {r['interval_s']}`, {r['rate_per_s']:g} events/s for "
                f"{r['seconds_produced']:g} s; bound lateness + interval + longest steady cycle = "
                f"{r['bound_lateness_interval_cycle_s']} s: {'within' if r['within_bound'] else '**not within**'}; "
                f"{_cycles(r['cycle_seconds'])} |")))
        if "train" in doc["parts"]:
            lines.append(_part_row(doc["train"], "sealed window → model pushed", lambda r: (
                f"| sealed window → model pushed (newest MANIFEST.json mtime → registry COMMITTED.json created_at) | "
                f"{r['sealed_to_pushed_s']} s | backfill of {r['rows']:,} rows ({r['windows']} windows) then at once "
                f"`ctpipe train --force`: gap {r['gap_backfill_end_to_train_start_s']} s, train process "
                f"{r['train_process_seconds']} s (fit {r['training_seconds']} s, {r['epochs']} epochs), "
                f"version {r['version']}, blessed {r['blessed']} |")))
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def write_doc(path: str, block: str) -> None:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200000,1000000,5000000", help="backfill sizes (rows), comma-separated")
    parser.add_argument("--hours", type=int, default=24, help="event-time hours of the backfill input")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="per pipeline (backfill) and per part (stream, latency, train)")
    parser.add_argument("--stream-n", type=int, default=100_000, help="bench_stream.py --n")
    parser.add_argument("--stream-args", default="--runner-config runner_configs/direct-multiprocess.yaml "
                        "--runner-config runner_configs/direct.yaml",
                        help="more bench_stream.py arguments (default: both local runners, each in its own store)")
    parser.add_argument("--latency-seconds", type=float, default=200.0, help="bench_latency.py sealed --seconds")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--results-dir", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--doc", default=os.path.join(REPO, "docs", "BENCHMARKS.md"),
                        help="markdown file whose bench-all block is replaced ('' to leave it)")
    parser.add_argument("--note", default="", help="a sentence printed above the tables")
    parser.add_argument("--render", metavar="RESULTS_JSON",
                        help="only rewrite the markdown of an earlier run from its bench/results file")
    args = parser.parse_args()

    if args.render:
        with open(args.render, encoding="utf-8") as handle:
            block = markdown(json.load(handle))
        if args.doc:
            write_doc(args.doc, block)
        print(block)
        return
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"run_all: --sizes {args.sizes!r} must be comma-separated row counts, e.g. 200000,1000000")
    if not sizes or min(sizes) < args.hours:
        raise SystemExit(f"run_all: --sizes needs at least one size of {args.hours} rows or more (one per hour)")
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    if skip - set(PARTS):
        raise SystemExit(f"run_all: unknown --skip {sorted(skip - set(PARTS))}; choose from {', '.join(PARTS)}")
    parts = [p for p in PARTS if p not in skip]
    work = args.workdir or tempfile.mkdtemp(prefix="ctpipe-bench-all-")
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    started = dt.datetime.now(dt.timezone.utc)
    doc = {"command": "python bench/run_all.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
           "started": started.strftime("%Y-%m-%d %H:%M"), "sizes": sizes, "parts": parts, "machine": machine(),
           "load_before": [round(x, 2) for x in os.getloadavg()], "workdir": work, "note": args.note}
    if "backfill" in parts:
        doc["backfill"] = []
        for size in sizes:
            print(f"run_all: backfill {size:,} rows", file=sys.stderr, flush=True)
            result = bench_backfill.bench(size, args.hours, os.path.join(work, f"backfill-{size}"),
                                          list(bench_backfill.PIPELINES), args.max_seconds)
            doc["backfill"].append({"size": size, "result": result})
    if "stream" in parts:
        print(f"run_all: stream {args.stream_n:,} events", file=sys.stderr, flush=True)
        doc["stream"] = run_json([py, os.path.join(REPO, "bench", "bench_stream.py"), "--n", str(args.stream_n),
                                  *shlex.split(args.stream_args)], args.max_seconds, os.path.join(work, "stream.log"))
    if "latency" in parts:
        print("run_all: event -> sealed latency", file=sys.stderr, flush=True)
        doc["latency"] = run_json([py, os.path.join(REPO, "bench", "bench_latency.py"), "sealed", "--seconds",
                                   str(args.latency_seconds)], args.max_seconds, os.path.join(work, "latency.log"))
    if "train" in parts:
        print("run_all: sealed -> pushed latency", file=sys.stderr, flush=True)
        doc["train"] = run_json([py, os.path.join(REPO, "bench", "bench_latency.py"), "train"], args.max_seconds,
                                os.path.join(work, "train.log"))
    finished = dt.datetime.now(dt.timezone.utc)
    doc["finished"] = finished.strftime("%H:%M")
    doc["load_after"] = [round(x, 2) for x in os.getloadavg()]
    os.makedirs(args.results_dir, exist_ok=True)
    results_file = os.path.join(args.results_dir, started.strftime("%Y-%m-%dT%H%MZ") + ".json")
    inside = os.path.abspath(results_file).startswith(REPO + os.sep)
    doc["results_file"] = os.path.relpath(results_file, REPO) if inside else os.path.abspath(results_file)
    with open(results_file, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=2, sort_keys=True)
    block = markdown(doc)
    if args.doc:
        write_doc(args.doc, block)
    print(block)


if __name__ == "__main__":
    main()
