"""Prometheus metrics every stage reports through.

Counters and histograms live in one registry. Long runs (``ctpipe stream --interval``) serve it
on ``metrics.port``; batch runs push it to ``metrics.pushgateway`` when they end (job label
``ctpipe_<command>``). Beam DoFns count with Beam metrics (they may run in other processes); the
driver copies the pipeline result's counters into these after the run (``record_beam_counters``).
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, push_to_gateway, start_http_server

REGISTRY = CollectorRegistry()

RECORDS_IN = Counter("ctpipe_records_in", "Records read from a source", ["stage", "source"], registry=REGISTRY)
RECORDS_OUT = Counter("ctpipe_records_out", "Records written by a stage", ["stage"], registry=REGISTRY)
DEAD_LETTERS = Counter("ctpipe_dead_letters", "Records sent to dead-letter", ["stage", "reason"],
                       registry=REGISTRY)
WINDOWS_SEALED = Counter("ctpipe_windows_sealed", "Windows sealed, by verdict", ["verdict"], registry=REGISTRY)
STAGE_DURATION = Histogram("ctpipe_stage_duration_seconds", "Wall time of a stage", ["stage"],
                           buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600), registry=REGISTRY)
LAST_SUCCESS = Gauge("ctpipe_last_success_timestamp_seconds", "Unix time of the last successful run",
                     ["job"], registry=REGISTRY)
KAFKA_LAG = Gauge("ctpipe_kafka_consumer_lag", "Records between the checkpoint and the log end",
                  ["topic", "partition"], registry=REGISTRY)
WATERMARK = Gauge("ctpipe_watermark_timestamp_seconds", "Event-time watermark", ["source"], registry=REGISTRY)
DATA_QUALITY = Gauge("ctpipe_data_quality", "Data-quality score of a window (0..1 or seconds)",
                     ["window", "dimension", "feature"], registry=REGISTRY)
DRIFT = Gauge("ctpipe_drift_score", "Drift of the newest window against its predecessor", ["feature"],
              registry=REGISTRY)
GATE_DECISIONS = Counter("ctpipe_gate_decisions", "Evaluation gate outcomes", ["outcome"], registry=REGISTRY)
MODEL_METRIC = Gauge("ctpipe_model_metric", "Evaluation metric of a model version",
                     ["model", "version", "metric"], registry=REGISTRY)
MODELS_PUSHED = Counter("ctpipe_models_pushed", "Model versions pushed to the registry", ["model"],
                        registry=REGISTRY)


@contextmanager
def timed(stage: str):
    start = time.monotonic()
    try:
        yield
    finally:
        STAGE_DURATION.labels(stage=stage).observe(time.monotonic() - start)


def record_beam_counters(result, stage: str, source: str) -> dict[str, int]:
    """Copy the Beam counters of a finished pipeline into Prometheus; returns them by name.

    Beam counter names used by ctpipe's transforms: ``records_in``, ``records_out``,
    ``deadletter:<reason>``. The runner's own system counters (namespace ``beam``: element counts,
    data-channel indices... which portable runners such as Flink report and DirectRunner does
    not) are left out, so a run's record is the same on every runner.
    """
    totals: dict[str, int] = {}
    for counter in result.metrics().query()["counters"]:
        if counter.key.metric.namespace == "beam":
            continue
        name = counter.key.metric.name
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[name] = totals.get(name, 0) + int(value or 0)
    for name, value in totals.items():
        if name == "records_in":
            RECORDS_IN.labels(stage=stage, source=source).inc(value)
        elif name == "records_out":
            RECORDS_OUT.labels(stage=stage).inc(value)
        elif name.startswith("deadletter:"):
            DEAD_LETTERS.labels(stage=stage, reason=name.split(":", 1)[1]).inc(value)
    return totals


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on ``addr:port`` for the rest of the process (port 0: do nothing)."""
    if port:
        start_http_server(port, addr=addr, registry=REGISTRY)


def push(gateway: str | None, job: str) -> None:
    if gateway:
        push_to_gateway(gateway, job=f"ctpipe_{job}", registry=REGISTRY)
