"""Prometheus metrics every stage reports through.

Counters and histograms live in one registry. Long runs (``ctpipe stream --interval``) serve it
on ``metrics.port``; batch runs push it to ``metrics.pushgateway`` when they end (job label
``ctpipe_<command>``). Beam DoFns count with Beam metrics (they may run in other processes); the
driver copies the pipeline result's counters into these after the run (``record_beam_counters``).

Series that alerts select by label value exist from the start: every window verdict and both gate
outcomes are exported as 0 until they happen, so ``increase(...{verdict="QUARANTINED"}[1h])`` sees
the first quarantine instead of a series that appears already at 1.
"""
from __future__ import annotations

import http.client
import sys
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
_LAST_SUCCESS_NAME = "ctpipe_last_success_timestamp_seconds"
_LAST_SUCCESS_HELP = "Unix time of the last successful run"
LAST_SUCCESS = Gauge(_LAST_SUCCESS_NAME, _LAST_SUCCESS_HELP, ["job"], registry=REGISTRY)
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

MODEL_AGE = Gauge("ctpipe_model_age_seconds", "Age of the production model (since its push), by the controller",
                  ["model"], registry=REGISTRY)
WINDOWS_BEHIND = Gauge("ctpipe_model_windows_behind",
                       "Usable sealed windows newer than the newest window the production model was trained on",
                       ["model"], registry=REGISTRY)
CONTROLLER_RUNS = Counter("ctpipe_controller_runs", "Training runs the controller started, by outcome "
                          "(counted across restarts from its state)", ["outcome"], registry=REGISTRY)
CONSECUTIVE_REJECTIONS = Gauge("ctpipe_controller_consecutive_rejections",
                               "Controller runs in a row whose candidate the gate rejected", ["model"],
                               registry=REGISTRY)

VERDICTS = ("PASS", "WARN", "QUARANTINED")
"""Window verdicts (transforms.validation); each one's sealed-window counter starts at 0."""
GATE_OUTCOMES = ("blessed", "rejected")
"""Gate outcomes; each one's counter starts at 0."""
for _verdict in VERDICTS:
    WINDOWS_SEALED.labels(verdict=_verdict)
for _outcome in GATE_OUTCOMES:
    GATE_DECISIONS.labels(outcome=_outcome)
CONTROLLER_OUTCOMES = ("blessed", "rejected", "reused", "already-trained", "no-windows", "failed")
"""Outcomes of controller runs (pipeline/control_loop.py); each one's counter starts at 0."""
for _outcome in CONTROLLER_OUTCOMES:
    CONTROLLER_RUNS.labels(outcome=_outcome)

SUCCESS_GROUP = {"outcome": "success"}
"""Pushgateway grouping labels (besides ``job``) of the last-success timestamp, see ``push``."""


@contextmanager
def timed(stage: str):
    start = time.monotonic()
    try:
        yield
    finally:
        STAGE_DURATION.labels(stage=stage).observe(time.monotonic() - start)


def record_beam_counters(result, stage: str, source: str) -> dict[str, int]:
    """Copy the Beam counters of a finished pipeline into Prometheus; returns them by name.

    Only ctpipe's own counters (namespace ``ctpipe``: ``records_in``, ``records_out``,
    ``deadletter:<reason>``, ``late_records``...) are kept, so a run's record is the same on every
    runner: the runner's system counters (namespace ``beam``, which portable runners such as Flink
    report and DirectRunner does not) and the libraries' internal ones (tf.Transform, TFDV, tfx_bsl:
    some reported by DirectRunner and not by Flink, e.g. ``binary_scalar_len_2``) are left out.
    """
    from apache_beam.metrics.metric import MetricsFilter

    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace("ctpipe"))["counters"]:
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


class _Families:
    """A read-only view of a registry holding only the metric families ``keep`` accepts."""

    def __init__(self, registry: CollectorRegistry, keep):
        self._registry = registry
        self._keep = keep

    def collect(self):
        return [family for family in self._registry.collect() if self._keep(family.name)]


def _last_success_of(job: str) -> float | None:
    for family in LAST_SUCCESS.collect():
        for sample in family.samples:
            if sample.labels.get("job") == job:
                return sample.value
    return None


PUSH_TIMEOUT_S = 10.0
"""How long one push to the Pushgateway may take before it counts as failed."""
_warned: set = set()


def push(gateway: str | None, job: str, grouping: dict | None = None) -> bool:
    """Push this process's metrics to the Pushgateway under ``job=ctpipe_<job>`` (plus ``grouping``).

    The run's metrics replace their group (PUT), so the group holds exactly the latest run. The
    last-success timestamp is not part of it: it is pushed to a group of its own
    (``SUCCESS_GROUP``) and only by a run that succeeded, so a failed run, or a train run whose
    candidate the gate rejected, never deletes the time of the last success.

    Metrics are an export, not the command's result: a failure (gateway down, refused, slow, a bad
    address) is one warning on stderr per gateway and process, never an exception, so it cannot
    change an exit code. Returns whether the push landed.
    """
    if not gateway:
        return True
    group = dict(grouping or {})
    try:
        push_to_gateway(gateway, job=f"ctpipe_{job}", grouping_key=group, timeout=PUSH_TIMEOUT_S,
                        registry=_Families(REGISTRY, lambda name: name != _LAST_SUCCESS_NAME))
        succeeded_at = _last_success_of(job)
        if succeeded_at is not None:
            success = CollectorRegistry()
            Gauge(_LAST_SUCCESS_NAME, _LAST_SUCCESS_HELP, ["job"], registry=success).labels(
                job=job).set(succeeded_at)
            push_to_gateway(gateway, job=f"ctpipe_{job}", grouping_key={**group, **SUCCESS_GROUP},
                            registry=success, timeout=PUSH_TIMEOUT_S)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError/HTTPError/timeouts are OSErrors
        if gateway not in _warned:
            _warned.add(gateway)
            print(f"ctpipe: warning: could not push metrics (job ctpipe_{job}) to the Pushgateway at {gateway} "
                  f"(metrics.pushgateway): {exc}; the command's result is unaffected, its metrics of this run "
                  "are not exported", file=sys.stderr, flush=True)
        return False
    return True
