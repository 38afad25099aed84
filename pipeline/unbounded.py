"""``ctpipe stream --unbounded``: submit the unbounded graph (pipeline/streaming_graph.py) to a
streaming runner and stay attached to the job until it ends.

The graph reads source.kafka with Beam's KafkaIO (a cross-language transform expanded by the Java
expansion service of ``source.kafka.expansion_service``), assigns event-time windows with the
configured allowed lateness and seals them with the composite every graph uses; late records make
new window versions, and records after the allowed lateness follow ``window.late_data``
(transforms/panes.py). On Flink (runner_configs/flink-streaming.yaml, flink-local-streaming.yaml)
the Kafka read runs inside the TaskManagers, its positions are Flink checkpoint state, and the
consumer group's offsets are committed when a checkpoint completes; a TaskManager lost mid-stream
is replaced by Flink restoring the last checkpoint.

What the command checks before it submits (one clear error each): a streaming runner config (not
DirectRunner, whose fallback never advances an unbounded watermark), source.kafka and that its broker
answers from here with those settings (address, TLS, SASL login, the topic: exit 3 naming the
setting, as `ctpipe stream` checks them, instead of a Java stack trace from the job server minutes
into the submission), a schema and a published transform on the storage root (the unbounded graph
applies one and never analyzes).

While attached, the command is the job's Prometheus exporter (pipeline/unbounded_metrics.py):
it serves ``metrics.port`` with the series ``ctpipe stream --interval`` exports, observed from
outside the job (the consumer group's committed offsets in Kafka, the manifests and dead letters
on the storage root), and pushes them to ``metrics.pushgateway`` when the job ends.

Limits, by design of a long-running job: it does not hold the storage root's lease (it would
lock every other writer out for the job's lifetime), so run backfills of the windows it is
sealing elsewhere or after it; and Ctrl-C / SIGTERM cancels the job (LOOPBACK workers live in
this process, so the job cannot outlive it).
"""
from __future__ import annotations

import signal
import sys
from typing import Callable, Optional

from core.errors import ConfigError, StorageError, TerminatedError
from pipeline.specs import LOCAL_RUNNERS


def check_streaming_options(options) -> None:
    """ConfigError unless ``options`` run a streaming job on a runner that can run this graph."""
    from apache_beam.options.pipeline_options import StandardOptions

    std = options.view_as(StandardOptions)
    runner = std.runner if isinstance(std.runner, str) else type(std.runner).__name__ if std.runner else None
    if runner is None or runner.split(".")[-1] in LOCAL_RUNNERS:
        raise ConfigError(f"ctpipe stream --unbounded needs a streaming runner (FlinkRunner, DataflowRunner), not "
                          f"{runner or 'DirectRunner'} (its local fallback never advances an unbounded watermark); "
                          "pass --runner-config runner_configs/flink-local-streaming.yaml (local cluster) or "
                          "runner_configs/flink-streaming.yaml")
    if not std.streaming:
        raise ConfigError("ctpipe stream --unbounded needs `streaming: true` in the runner config (Flink then runs "
                          "the job in streaming mode with checkpoints); see runner_configs/flink-streaming.yaml")


def check_kafka(config) -> None:
    """ConfigError without source.kafka; KafkaSourceError (exit 3, one line naming the setting) when
    its broker cannot be reached, refuses the TLS handshake or the SASL login, or lacks the topic."""
    if config.source.kafka is None:
        raise ConfigError("ctpipe stream --unbounded reads source.kafka: add a source.kafka section to the config")
    from transforms.kafka.client import client_kwargs
    from transforms.kafka.source import end_offsets

    end_offsets(client_kwargs(config.source.kafka), config.source.kafka.topic)


def build(pipeline, config):
    """The unbounded graph for ``config`` on ``pipeline``: (window summaries, dead-letter paths).

    Raises ConfigError / StorageError when the root has no schema or no published transform.
    """
    from core import schema_store
    from core.transform_store import current_transform
    from pipeline.streaming_graph import build_streaming_graph

    if config.source.kafka is None:
        raise ConfigError("ctpipe stream --unbounded reads source.kafka: add a source.kafka section to the config")
    root = config.storage.root
    loaded = schema_store.load(root)
    if loaded is None:
        raise StorageError(f"{root} has no schema yet: run `ctpipe backfill` (or a `ctpipe stream` micro-batch "
                           "cycle) on this storage root first; the unbounded graph applies its schema and transform")
    _schema, schema_text, schema_version = loaded
    return build_streaming_graph(pipeline, config, schema_text, schema_version, current_transform(root))


def run_unbounded(config, options, on_submitted: Optional[Callable[[str], None]] = None) -> str:
    """Submit the unbounded graph and wait until the job ends; returns its final state.

    ``on_submitted(job_id)`` is called once the runner accepted the job. SIGTERM (and Ctrl-C)
    cancels the job and raises TerminatedError (exit 130).
    """
    import apache_beam as beam

    from pipeline.unbounded_metrics import Exporter

    check_streaming_options(options)
    check_kafka(config)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, config)
    exporter = Exporter(config).start()  # before the job exists: its baseline is what was there before
    try:
        return _attached(pipeline, on_submitted)
    finally:
        exporter.stop()


def job_id_of(result) -> str:
    """The runner's id of a submitted job: ``job_id()`` where the result has it (Dataflow), else the
    portable runner's (Flink through Beam's job server), which its PipelineResult keeps unexposed."""
    job_id = getattr(result, "job_id", None)
    if callable(job_id):
        return str(job_id() or "")
    return str(getattr(result, "_job_id", "") or "")


def _attached(pipeline, on_submitted) -> str:
    result = pipeline.run()
    job_id = job_id_of(result)
    if on_submitted is not None:
        on_submitted(job_id)

    def terminate(signum, _frame):
        raise TerminatedError(f"signal {signum}: the unbounded job {job_id} was cancelled; its last completed "
                              "checkpoint's offsets are committed, so a new job continues from there")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        state = result.wait_until_finish()
    except RuntimeError as exc:  # the portable runner raises for every end but DONE
        # Cancelled from outside (Flink's UI or REST API): Beam 2.62's Flink job server reports the
        # job FAILED with Flink's JobCancellationException.
        if str(result.state) == "CANCELLED" or "JobCancellationException" in str(exc):
            return "CANCELLED"
        raise
    except (TerminatedError, KeyboardInterrupt):
        try:
            result.cancel()
        except Exception as exc:  # the job may be gone already; the interruption is what matters
            print(f"ctpipe: warning: cancelling job {job_id}: {exc}", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return str(state)
