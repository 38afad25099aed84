"""Prometheus series of the unbounded job (``ctpipe stream --unbounded``), observed from outside it.

The job runs in the runner (Flink's TaskManagers); the submitting process stays attached for the
job's whole life, so it is the exporter: it serves ``metrics.port`` from the same registry and
under the same names and labels as ``ctpipe stream --interval`` (pipeline/metrics.py), and
``JobObserver.poll`` keeps them current every ``POLL_INTERVAL_S`` from what it can see:

- Kafka (``transforms.kafka.source.group_offsets``, the client and security settings of
  source.kafka): the consumer group's committed offsets, which KafkaIO commits when a Flink
  checkpoint completes, against the topic's end offsets (the last stable offset under
  read_committed). ``ctpipe_kafka_consumer_lag{topic,partition}`` = end - committed (a partition
  without a commit counts from its beginning offset: the read starts there).
  ``ctpipe_records_in{stage="stream",source="kafka"}`` counts how far the committed offsets
  advanced since the command started: records a completed checkpoint covers, so it moves in
  steps of the checkpoint interval; offsets of transaction markers and aborted records count too.
- The storage root: ``ctpipe_windows_sealed{verdict}`` counts the window manifests (any version)
  that appeared since the command started, by the verdict of their validation; the data-quality
  and drift gauges are exported for those windows as a micro-batch cycle exports them;
  ``ctpipe_watermark_timestamp_seconds{source=kafka-<topic>}`` is the end of the newest window
  sealed since the start: a window seals once the job's watermark passed its end, so it is a lower
  bound of the job's watermark that moves in steps of window.size;
  ``ctpipe_last_success_timestamp_seconds{job="stream"}`` is set to the time a poll first saw a
  new manifest (the stale-stream alert expects a success at least every 30 minutes; an idle topic
  seals nothing, as idle ``--interval`` cycles record no success);
  ``ctpipe_dead_letters{stage="stream",reason}`` counts the dead-letter files the job wrote under
  <root>/deadletter/unbounded/ since the start (one per record, named by its position, so a
  replay after a restore rewrites a file instead of adding one).

Beam's own job metrics are not read: while the job runs, Beam's Flink job server answers
GetJobMetrics without any of ctpipe's counters (its JobInvocation takes the runner's metrics only
once the attached run returns, which a streaming job's does when the job ends;
tests/pipeline/test_flink_stream.py asks during its run and finds none), and Python's portable
PipelineResult caches its first metrics() answer, so neither updates while the job runs.

Everything the observer does is an export: an error (broker down, storage root unreachable, a
manifest that cannot be read) is one warning on stderr per source until that source answers again,
and the next poll retries; nothing it does can end or change the job.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional

from core import layout, storage
from core.layout import MANIFEST_PATH_RE
from pipeline import metrics

POLL_INTERVAL_S = 5.0
"""How often the attached command refreshes the series (each poll lists the storage root's manifests
and dead letters and reads the group's offsets once)."""
STAGE = "stream"
SOURCE = "kafka"
KAFKA_TIMEOUT_S = 10.0
"""How long one look at the group's offsets may take before that poll counts as failed."""


class JobObserver:
    """The series of one attached unbounded job (see the module docstring for what each reads).

    ``start`` records the baseline (committed offsets, manifests and dead letters already there)
    and must run before the job is submitted, so that nothing the job does is taken for the past;
    ``poll`` updates the series. A source that cannot be read at ``start`` takes its baseline at
    its first successful poll.
    """

    def __init__(self, config, warn: Callable[[str], None] = None, clock: Callable[[], float] = time.time):
        from pipeline.checkpoint import source_id
        from transforms.kafka.client import client_kwargs

        self.kafka = config.source.kafka
        self.root = config.storage.root
        self.window_s = config.window.size_s
        self.kwargs = client_kwargs(self.kafka)
        self.source_id = source_id(self.kafka.topic)
        self._warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self._clock = clock
        self.kafka_timeout_s = KAFKA_TIMEOUT_S
        self._failing: set[str] = set()
        self._offsets: Optional[dict] = None       # partition -> committed offset counted so far
        self._manifests: Optional[set] = None       # manifest paths seen (baseline + counted)
        self._dead: Optional[set] = None            # dead-letter paths seen (baseline + counted)
        self._watermark_ms: Optional[int] = None

    # ------------------------------------------------------------------------ driving

    def start(self) -> None:
        self.poll(baseline=True)

    def poll(self, baseline: bool = False) -> None:
        """One refresh of every series; never raises (each source warns once while it fails)."""
        self._guarded("kafka", "the consumer group's offsets (source.kafka)", self._poll_kafka, baseline)
        self._guarded("windows", f"the sealed windows under {self.root} (storage.root)", self._poll_windows,
                      baseline)
        self._guarded("deadletters", f"the dead letters under {layout.deadletter_unbounded_dir(self.root)}",
                      self._poll_dead_letters, baseline)

    def _guarded(self, name: str, what: str, step, baseline: bool) -> None:
        try:
            step(baseline)
        except Exception as exc:  # an export: never the job's end
            if name not in self._failing:
                self._failing.add(name)
                self._warn(f"ctpipe stream --unbounded: warning: metrics: cannot read {what}: {exc}; the job is "
                           f"unaffected, these series keep their last values and are retried every "
                           f"{POLL_INTERVAL_S:g} s")
        else:
            if name in self._failing:
                self._failing.discard(name)
                self._warn(f"ctpipe stream --unbounded: metrics: {what} readable again")

    # ------------------------------------------------------------------------ sources

    def _poll_kafka(self, baseline: bool) -> None:
        from transforms.kafka.source import group_offsets

        seen = group_offsets(self.kwargs, self.kafka.group_id, self.kafka.topic, self.kafka_timeout_s)
        for partition, lag in seen.lag().items():
            metrics.KAFKA_LAG.labels(topic=self.kafka.topic, partition=str(partition)).set(lag)
        if self._offsets is None:
            baseline = True
            self._offsets = {}
        counter = metrics.RECORDS_IN.labels(stage=STAGE, source=SOURCE)
        for partition, committed in seen.committed.items():
            if partition not in self._offsets:
                if baseline:  # where the job starts: the group's commit, or the beginning without one
                    self._offsets[partition] = seen.beginning[partition] if committed is None else committed
                    continue
                self._offsets[partition] = seen.beginning[partition]  # the topic grew: read from its beginning
            if committed is None:
                continue
            advance = committed - self._offsets[partition]
            if advance > 0:
                counter.inc(advance)
            self._offsets[partition] = committed  # backwards (a reset group): count on from there

    def _poll_windows(self, baseline: bool) -> None:
        paths = {p for p in storage.glob(layout.manifest_glob(self.root)) if MANIFEST_PATH_RE.search(p)}
        if self._manifests is None:
            self._manifests = paths
            return
        sealed_ids = []
        try:
            for path in sorted(paths - self._manifests):
                manifest = storage.read_json(path)  # written last and atomically: complete once listed
                metrics.WINDOWS_SEALED.labels(verdict=manifest["validation"]["verdict"]).inc()
                self._manifests.add(path)
                wid = MANIFEST_PATH_RE.search(path).group(1)
                sealed_ids.append(wid)
                end_ms = layout.window_id_start_ms(wid) + self.window_s * 1000
                self._watermark_ms = end_ms if self._watermark_ms is None else max(self._watermark_ms, end_ms)
        finally:  # what was counted before a failing read is exported all the same
            if sealed_ids:
                metrics.WATERMARK.labels(source=self.source_id).set(self._watermark_ms / 1000)
                metrics.LAST_SUCCESS.labels(job="stream").set(self._clock())
        if sealed_ids:
            from pipeline import quality

            quality.export_quality_metrics(self.root, sorted(set(sealed_ids)))

    def _poll_dead_letters(self, baseline: bool) -> None:
        paths = set(storage.glob(storage.join(layout.deadletter_unbounded_dir(self.root), "*.json")))
        if self._dead is None:
            self._dead = paths
            return
        for path in sorted(paths - self._dead):
            reason = storage.read_json(path)["reason"]
            metrics.DEAD_LETTERS.labels(stage=STAGE, reason=reason).inc()
            self._dead.add(path)


class Exporter:
    """Serves ``metrics.port`` and runs a JobObserver's polls on a daemon thread while attached
    (neither when metrics.port is 0 and no metrics.pushgateway is set: nobody would read them)."""

    def __init__(self, config, observer: Optional[JobObserver] = None, interval_s: float = POLL_INTERVAL_S):
        self.config = config
        self.observer = observer or (JobObserver(config) if self.enabled else None)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def enabled(self) -> bool:
        """Whether the series go anywhere (metrics.port or metrics.pushgateway set); else nothing runs."""
        return bool(self.config.metrics.port or self.config.metrics.pushgateway)

    def start(self) -> "Exporter":
        """Serve /metrics and take the baseline; call before the job is submitted."""
        if not self.enabled:
            return self
        port, bind = self.config.metrics.port, self.config.metrics.bind
        try:
            metrics.serve(port, bind)
        except OSError as exc:
            self.observer._warn(f"ctpipe stream --unbounded: warning: cannot serve /metrics on {bind}:{port} "
                                f"(metrics.port, metrics.bind): {exc}; the job runs without its Prometheus "
                                "endpoint (pick a free port)")
        self.observer.start()
        self._thread = threading.Thread(target=self._run, name="ctpipe-unbounded-metrics", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):  # the refresh schedule
            self.observer.poll()

    def stop(self) -> None:
        """Stop polling, refresh once more and push to metrics.pushgateway (when set)."""
        if not self.enabled:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(60.0, 4 * self.interval_s))
        self.observer.poll()
        metrics.push(self.config.metrics.pushgateway, "stream")
