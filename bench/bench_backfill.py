"""Backfill throughput and peak memory: ctpipe's backfill graph vs two tf.Transform peers, same input.

Each pipeline runs in its own fresh interpreter (``--pipeline NAME`` below) on the same JSONL files,
so its peak RSS (``os.wait4``'s rusage ``ru_maxrss`` of that child alone) is its own; the peak RSS
and PSS summed over its process group (sampled every MEMORY_SAMPLE_S) count the processes it
started too:

- ``ctpipe``: ``run_backfill`` on DirectRunner in one process, one core (runner_configs/direct.yaml;
  first run: schema inference, decode with dead-letter routing, record checks, per-window grouping
  and de-duplication, statistics, validation, tf.Transform, raw and transformed TFRecords per
  window, manifests).
- ``ctpipe_every_core``: the same on runner_configs/direct-multiprocess.yaml (one SDK worker per
  core, forked warm: pipeline/forked_workers.py), into its own store.
- ``tfx_dicts``: the TFX-style peer of shared/DESIGN.md: ReadFromText -> json.loads -> TFT
  AnalyzeAndTransformDataset on instance dicts -> ExampleProtoCoder -> WriteToTFRecord.
- ``tfx_dicts_stats``: the same plus the baseline's TFDV GenerateStatistics over a ToList of every
  row (what this bench measured first; TFX's StatisticsGen does not gather every row in one list).
- ``recordbatch``: the same tf.Transform work on Arrow RecordBatches in the TFXIO convention:
  ReadFromText -> json.loads -> BatchElements -> RecordBatch (every column a large_list) ->
  AnalyzeAndTransformDataset with a TensorAdapterConfig, output_record_batches=True ->
  tfx_bsl RecordBatchToExamples -> WriteToTFRecord.

The peers use one schema for both, inferred once by TFDV (infer_schema, infer_feature_shape=True:
what TFX's SchemaGen does) from the first 20,000 lines and written next to the input, so they do not
depend on ctpipe's run. A pipeline that exits non-zero, is killed (out of memory) or runs past
``--max-seconds`` is reported with its reason instead of stopping the others.

    .venv/bin/python bench/bench_backfill.py --rows 200000 [--max-seconds 3600] [--pipelines ctpipe,...]

Prints one JSON object (per pipeline: seconds, rows/s, peak RSS MB, status; the ratios of ctpipe's
rows/s to each peer's that succeeded in the same run).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

PIPELINES = ("ctpipe", "ctpipe_every_core", "tfx_dicts", "tfx_dicts_stats", "recordbatch")
CTPIPE = {"ctpipe": "direct.yaml", "ctpipe_every_core": "direct-multiprocess.yaml"}
"""The ctpipe pipelines and the runner config each runs with (the peers always run direct.yaml)."""
MEMORY_SAMPLE_S = 0.25
SCHEMA_SAMPLE_LINES = 20_000


# -- the pipelines (each runs in its own interpreter through --pipeline) ---------------------------

def _peer_schema(work: str):
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = schema_pb2.Schema()
    with open(os.path.join(work, "peer_schema.pb"), "rb") as handle:
        schema.ParseFromString(handle.read())
    return schema


def run_ctpipe(work: str, options, store: str = "ctpipe-store") -> dict:
    from pipeline.backfill import run_backfill
    from pipeline.config import config_from_dict

    config = config_from_dict({"storage": {"root": os.path.join(work, store)},
                               "source": {"files": {"uri": os.path.join(work, "events", "*.jsonl")}}})
    start = time.perf_counter()
    result = run_backfill(config, options, None, None)
    return {"seconds": time.perf_counter() - start, "windows": len(result.record["windows"])}


def run_tfx_dicts(work: str, options, with_stats: bool) -> dict:
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform import coders as tft_coders
    from tensorflow_transform.tf_metadata import dataset_metadata

    from examples.sensors import preprocessing_fn

    schema = _peer_schema(work)
    events_glob = os.path.join(work, "events", "*.jsonl")
    out_dir = os.path.join(work, "tfx_dicts_stats" if with_stats else "tfx_dicts")
    raw_metadata = dataset_metadata.DatasetMetadata(schema)
    names = [f.name for f in schema.feature]

    def to_instance(line):
        event = json.loads(line)
        return {name: [event[name]] for name in names}

    start = time.perf_counter()
    with beam.Pipeline(options=options) as p:
        with tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp")):
            rows = p | "Read" >> beam.io.ReadFromText(events_glob) | "Parse" >> beam.Map(to_instance)
            (transformed, transformed_metadata), _fn = (rows, raw_metadata) | tft_beam.AnalyzeAndTransformDataset(
                preprocessing_fn)
            coder = tft_coders.ExampleProtoCoder(transformed_metadata.schema)
            _ = (transformed | "Encode" >> beam.Map(coder.encode)
                 | "Write" >> beam.io.WriteToTFRecord(os.path.join(out_dir, "data"), file_name_suffix=".gz"))
            if with_stats:
                import tensorflow_data_validation as tfdv

                _ = (p | "ReadForStats" >> beam.io.ReadFromText(events_glob)
                     | "ToDataFrameRows" >> beam.Map(lambda line: _to_arrow(json.loads(line), names))
                     | "BatchStats" >> beam.combiners.ToList()
                     | "ToBatch" >> beam.FlatMap(_concat_batches)
                     | "Stats" >> tfdv.GenerateStatistics()
                     | "WriteStats" >> tfdv.WriteStatisticsToBinaryFile(os.path.join(out_dir, "stats.pb")))
    return {"seconds": time.perf_counter() - start}


def _to_arrow(event, names):
    return {n: event.get(n) for n in names}


def _concat_batches(rows, size=10_000):
    import pyarrow as pa

    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        arrays, fields = [], []
        for name in chunk[0]:
            values = [[r[name]] if r[name] is not None else None for r in chunk]
            arrays.append(pa.array(values))
            fields.append(name)
        yield pa.RecordBatch.from_arrays(arrays, fields)


def _arrow_schema(schema):
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2

    types = {schema_pb2.INT: pa.large_list(pa.int64()), schema_pb2.FLOAT: pa.large_list(pa.float32()),
             schema_pb2.BYTES: pa.large_list(pa.large_binary())}
    return pa.schema([pa.field(f.name, types[f.type]) for f in schema.feature])


def _to_record_batch(events, arrow_schema):
    import pyarrow as pa

    columns = []
    for field in arrow_schema:
        binary = pa.types.is_large_binary(field.type.value_type)
        values = []
        for event in events:
            value = event.get(field.name)
            if value is None:
                values.append(None)
            else:
                values.append([value.encode() if binary and isinstance(value, str) else value])
        columns.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(columns, schema=arrow_schema)


def run_recordbatch(work: str, options) -> dict:
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.coders import example_coder
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    from examples.sensors import preprocessing_fn

    schema = _peer_schema(work)
    arrow_schema = _arrow_schema(schema)
    adapter_config = tensor_adapter.TensorAdapterConfig(
        arrow_schema, tensor_representation_util.InferTensorRepresentationsFromSchema(schema))
    out_dir = os.path.join(work, "recordbatch")

    start = time.perf_counter()
    with beam.Pipeline(options=options) as p:
        with tft_beam.Context(temp_dir=os.path.join(out_dir, "tmp")):
            batches = (p | "Read" >> beam.io.ReadFromText(os.path.join(work, "events", "*.jsonl"))
                       | "Parse" >> beam.Map(json.loads)
                       | "Batch" >> beam.BatchElements(min_batch_size=1000, max_batch_size=10_000)
                       | "ToRecordBatch" >> beam.Map(_to_record_batch, arrow_schema))
            (transformed, _metadata), _fn = (batches, adapter_config) | tft_beam.AnalyzeAndTransformDataset(
                preprocessing_fn, output_record_batches=True)
            _ = (transformed
                 | "ToExamples" >> beam.FlatMap(lambda pair: example_coder.RecordBatchToExamples(pair[0]))
                 | "Write" >> beam.io.WriteToTFRecord(os.path.join(out_dir, "data"), file_name_suffix=".gz"))
    return {"seconds": time.perf_counter() - start}


def run_one(name: str, work: str) -> None:
    """Run one pipeline in this process; print its JSON (with this process's own peak RSS)."""
    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from pipeline.options import pipeline_options

    options = pipeline_options(os.path.join(REPO, "runner_configs", CTPIPE.get(name, "direct.yaml")))
    if name in CTPIPE:
        out = run_ctpipe(work, options, "ctpipe-store" if name == "ctpipe" else f"{name}-store")
    elif name == "recordbatch":
        out = run_recordbatch(work, options)
    else:
        out = run_tfx_dicts(work, options, with_stats=name == "tfx_dicts_stats")
    out["self_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("BENCH_RESULT " + json.dumps(out), flush=True)


# -- the driver -------------------------------------------------------------------------------------

def prepare(work: str, rows: int, hours: int) -> int:
    """Write the synthetic events and the peers' schema under ``work``; return the valid row count."""
    from pipeline import synthetic

    per_hour = max(1, rows // hours)
    stats = synthetic.write_jsonl(os.path.join(work, "events"),
                                  synthetic.generate(dt.datetime(2026, 11, 27), hours, per_hour,
                                                     malformed_per_hour=0, out_of_range_per_hour=0),
                                  rows_per_hour=per_hour)
    return stats.valid


def write_peer_schema(work: str) -> None:
    """TFDV's inferred schema (SchemaGen-style) from the first SCHEMA_SAMPLE_LINES lines."""
    import glob

    import pandas as pd
    import tensorflow_data_validation as tfdv

    events = []
    for path in sorted(glob.glob(os.path.join(work, "events", "*.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                events.append(json.loads(line))
                if len(events) >= SCHEMA_SAMPLE_LINES:
                    break
        if len(events) >= SCHEMA_SAMPLE_LINES:
            break
    stats = tfdv.generate_statistics_from_dataframe(pd.DataFrame(events))
    schema = tfdv.infer_schema(stats, infer_feature_shape=True)
    with open(os.path.join(work, "peer_schema.pb"), "wb") as handle:
        handle.write(schema.SerializeToString())


def group_memory_kb(pgid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB summed over the live processes of process group ``pgid``: a child and every
    process it started (ctpipe's forkserver helper and its forked SDK workers included). PSS
    divides each shared page among the processes sharing it, so forked workers' common imports
    count once."""
    rss = pss = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
            with open(f"/proc/{name}/smaps_rollup", encoding="ascii", errors="replace") as handle:
                for line in handle:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process left while being read
    return rss, pss


def run_child(argv: list, max_seconds: float, log_path: str) -> dict:
    """Run ``argv`` in a fresh process group; its own rusage via os.wait4 (peak RSS of that child alone).

    Returns status ok / failed (exit code, log tail) / timeout (killed after max_seconds) /
    killed (a signal from outside: the kernel's OOM killer sends SIGKILL)."""
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(max_seconds, kill)
        done, peaks = threading.Event(), [0, 0]

        def sample():  # the whole group's memory, every MEMORY_SAMPLE_S until the child exits
            while not done.wait(MEMORY_SAMPLE_S):
                peaks[:] = [max(a, b) for a, b in zip(peaks, group_memory_kb(proc.pid))]

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        timer.start()
        sampler.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            done.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    out = {"wall_seconds": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
           "group_peak_rss_mb": round(peaks[0] / 1024, 1), "group_peak_pss_mb": round(peaks[1] / 1024, 1),
           "exit_code": proc.returncode}
    result = [line for line in text.splitlines() if line.startswith("BENCH_RESULT ")]
    if timed_out.is_set():
        out.update(status="timeout", reason=f"killed after --max-seconds {max_seconds:g}")
    elif proc.returncode == 0 and result:
        out.update(status="ok", **json.loads(result[-1][len("BENCH_RESULT "):]))
    elif proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        out.update(status="killed", reason=f"{name} (SIGKILL from outside: most likely the kernel's "
                                           f"out-of-memory killer; peak RSS {out['peak_rss_mb']} MB)"
                   if name == "SIGKILL" else name)
    else:
        tail = [line for line in text.splitlines() if line.strip()][-3:]
        out.update(status="failed", reason=f"exit {proc.returncode}: " + " | ".join(tail)[-600:])
    out["log"] = log_path
    return out


def bench(rows: int, hours: int, workdir: str, pipelines: list, max_seconds: float) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    python = sys.executable
    prep = run_child([python, os.path.abspath(__file__), "--prepare", "--rows", str(rows), "--hours", str(hours),
                      "--workdir", workdir], max_seconds, os.path.join(workdir, "prepare.log"))
    out = {"rows_requested": rows, "hours": hours, "workdir": workdir, "prepare": prep, "pipelines": {}}
    if prep["status"] != "ok":
        out["error"] = f"preparing the input failed: {prep.get('reason')}"
        return out
    out["rows"] = prep["rows"]
    for name in pipelines:
        res = run_child([python, os.path.abspath(__file__), "--pipeline", name, "--workdir", workdir],
                        max_seconds, os.path.join(workdir, f"{name}.log"))
        if res["status"] == "ok":
            res["rows_per_s"] = round(out["rows"] / res["seconds"])
            res["seconds"] = round(res["seconds"], 2)
        out["pipelines"][name] = res
    ok = {n: r for n, r in out["pipelines"].items() if r["status"] == "ok"}
    if "ctpipe" in ok:
        out["ratios_ctpipe_over"] = {n: round(ok["ctpipe"]["rows_per_s"] / r["rows_per_s"], 3)
                                     for n, r in ok.items() if n != "ctpipe"}
    if "ctpipe_every_core" in ok:
        out["ratios_ctpipe_every_core_over"] = {
            n: round(ok["ctpipe_every_core"]["rows_per_s"] / r["rows_per_s"], 3)
            for n, r in ok.items() if n != "ctpipe_every_core"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--pipelines", default=",".join(PIPELINES),
                        help=f"comma-separated subset of {', '.join(PIPELINES)}")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="kill a pipeline that runs longer than this (reported as timeout)")
    parser.add_argument("--pipeline", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.prepare:
        rows = prepare(args.workdir, args.rows, args.hours)
        write_peer_schema(args.workdir)
        print("BENCH_RESULT " + json.dumps({"rows": rows, "seconds": 0.0}), flush=True)
        return
    if args.pipeline:
        run_one(args.pipeline, args.workdir)
        return
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    unknown = sorted(set(pipelines) - set(PIPELINES))
    if unknown:
        raise SystemExit(f"bench_backfill: unknown --pipelines {unknown}; choose from {', '.join(PIPELINES)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="ctpipe-bench-")
    print(json.dumps(bench(args.rows, args.hours, workdir, pipelines, args.max_seconds), indent=2))


if __name__ == "__main__":
    main()
