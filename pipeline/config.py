"""Typed, frozen configuration of a ctpipe deployment, read from one YAML file (ctpipe.yaml).

Every section is a frozen dataclass (pipeline/typed_config.py: checking, loading, JSON Schema);
every field is documented where it is declared, and those docstrings are the descriptions of the
JSON Schema that ``ctpipe config schema`` prints (examples/ctpipe.yaml is a complete, commented
example). Unknown keys are rejected with the key's full path and the keys allowed there, so a
typo never silently falls back to a default; every error names the bad key and the fix. Secrets
never live here: the Kafka section names the environment variables or mounted files that hold
them.

Durations are strings such as ``"90s"``, ``"15m"``, ``"1h"`` or ``"1d"``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Annotated, Literal, Mapping, Optional

import yaml

from core.errors import ConfigError
from pipeline.typed_config import (
    Duration,
    Invalid,
    Matches,
    Range,
    Schema,
    Section,
    WholeSeconds,
    build,
    duration_ms,
    json_schema_of,
    parse_duration,
    to_plain,
)

DEFAULT_CONFIG_FILE = "ctpipe.yaml"

EnvName = Annotated[str, Matches(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name (e.g. KAFKA_PASSWORD): "
                                                           "name the variable, never write the secret here")]


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class StorageConfig(Section):
    root: str = "./demo-work/store"
    """Where windows, checkpoints, dead letters, schemas and transforms live: a local
    directory, ``s3://bucket/prefix`` or ``gs://bucket/prefix`` (through Beam FileSystems)."""


@dataclass(frozen=True)
class FilesSourceConfig(Section):
    uri: str = ""
    """Glob of input files (local, s3://, gs://), e.g. ``data/events-*.jsonl``."""
    format: Literal["jsonl", "csv", "parquet"] = "jsonl"
    """One of ``jsonl``, ``csv`` (header row required) or ``parquet``."""
    schema_sample_records: Optional[Annotated[int, Range(ge=1)]] = None
    """``null`` (the default): the first backfill on an empty store infers the schema from every
    record, one more full pass over the input. A number: from about that many records, the first
    ones of every input file, the same number from each (at least one), which saves most of that
    pass on a large backfill. The trade: a string feature's inferred domain holds only the sampled
    values, and a record with a value outside it is a ``domain_violation`` dead letter (kept with
    its position, so it can be replayed once the schema's domain is edited)."""


@dataclass(frozen=True)
class KafkaSourceConfig(Section):
    bootstrap_servers: str = ""
    """Comma-separated host:port list of the Kafka cluster."""
    topic: str = ""
    """Topic holding JSON event values."""
    group_id: str = "ctpipe"
    """Consumer group whose offsets ctpipe commits after each checkpoint (for lag monitoring);
    the data path itself uses manual partition assignment and never joins the group."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: Optional[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]] = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 when security_protocol is SASL_*."""
    sasl_username_env: Optional[EnvName] = None
    """Name of the environment variable that holds the SASL user name."""
    sasl_password_env: Optional[EnvName] = None
    """Name of the environment variable that holds the SASL password."""
    sasl_password_file: Optional[str] = None
    """Path of a mounted file whose content is the SASL password (alternative to the env var)."""
    ssl_cafile: Optional[str] = None
    """CA bundle used to verify the brokers' certificates."""
    ssl_check_hostname: bool = True
    """Check that the broker certificate matches its host name (keep on in production)."""
    max_message_bytes: Annotated[int, Range(ge=1)] = 1_000_000
    """Values larger than this go to dead-letter as oversize."""
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    """read_committed (default): records of aborted transactions never enter a window and a cycle
    reads up to the last stable offset, so it never waits on an open transaction;
    read_uncommitted reads every record up to the high watermark, aborted ones included."""
    max_records_per_split: Annotated[int, Range(ge=1)] = 20_000
    """Offset ranges are split into pieces of at most this many records across Beam workers."""
    idle_partition_timeout: Optional[Duration] = None
    """A partition that has delivered no records for this long (e.g. "30m") stops holding the
    watermark back; its later records may then be late (see window.late_data). Off by default:
    the watermark waits for every partition that has ever had data."""

    expansion_service: Optional[str] = None
    """host:port of the Java expansion service that expands the Kafka read of the unbounded graph
    (``ctpipe stream --unbounded``, Beam's KafkaIO; locally ``scripts/services.sh start
    beam-expansion`` prints it as CTPIPE_BEAM_KAFKA_EXPANSION_ENDPOINT). Unused by the micro-batches."""

    def idle_timeout_s(self) -> Optional[float]:
        if self.idle_partition_timeout is None:
            return None
        return parse_duration(self.idle_partition_timeout, key="source.kafka.idle_partition_timeout")


@dataclass(frozen=True)
class SourceConfig(Section):
    files: FilesSourceConfig = field(default_factory=FilesSourceConfig)
    """Object-store / local files: history and backfills."""
    kafka: Optional[KafkaSourceConfig] = None
    """Live events; needed by ``ctpipe stream``."""


@dataclass(frozen=True)
class EventTimeConfig(Section):
    field: str = "ts"
    """Name of the event-time field in each event."""
    format: Literal["auto", "iso8601", "epoch_s", "epoch_ms"] = "auto"
    """``iso8601``, ``epoch_s``, ``epoch_ms`` or ``auto`` (strings are ISO-8601; numbers above
    1e11 are milliseconds, else seconds)."""
    max_future: Optional[Duration] = "1d"
    """How far an event time may lie ahead of the record's ingest time (its Kafka timestamp) or
    of the time the stream cycle was planned, whichever is earlier; later ones are
    ``event_time_in_future`` dead letters and never move the watermark. Files have no ingest
    time: a backfill applies only the 1970..9999 rule. ``null`` turns the bound off."""


@dataclass(frozen=True)
class WindowConfig(Section):
    size: Duration = "1h"
    """Length of a fixed event-time window: whole minutes, at least one, dividing one day evenly
    (window ids name a window's start to the minute)."""
    allowed_lateness: WholeSeconds = "15m"
    """How long after a window's end its data may still arrive before the window is sealed
    (whole seconds)."""
    late_data: Literal["new_version", "side_output"] = "new_version"
    """What happens to a record for an already sealed window: ``new_version`` (the window is
    re-sealed as v<N+1> holding the old records plus the late ones) or ``side_output`` (the
    record is written to <root>/late/ and counted, the window stays as it is)."""
    batch_rows: Annotated[int, Range(ge=1, le=1_000_000)] = 8192
    """Rows of a window handled at a time while it is sealed (encoded as examples, their
    provenance, transformed): what bounds the Python objects a window needs. Its Arrow columns
    (tens of bytes a row) are still held whole while it is sorted and validated."""

    def __post_init__(self):
        super().__post_init__()
        ms = duration_ms(self.size)
        # Window ids name a window's start to the minute (core.layout: 20261127T0100Z), so two
        # windows of one minute would share an id: sizes are whole minutes.
        if ms < 60_000:
            raise Invalid("size", f"{self.size!r} is shorter than one minute, and window ids name the minute "
                          "(20261127T0100Z); use e.g. '1m', '15m', '1h'")
        if ms % 60_000:
            raise Invalid("size", f"{self.size!r} is not a whole number of minutes, and window ids name the minute "
                          "(20261127T0100Z); use e.g. '1m', '15m', '1h'")
        if 86_400_000 % ms:
            raise Invalid("size", f"{self.size!r} does not divide one day evenly; use e.g. '5m', '15m', '1h', '6h'")

    @property
    def size_s(self) -> int:
        return duration_ms(self.size) // 1000

    @property
    def lateness_s(self) -> int:
        return duration_ms(self.allowed_lateness) // 1000


_DEFAULT_BLOCKING = ("SCHEMA_NEW_COLUMN", "ENUM_TYPE_UNEXPECTED_STRING_VALUES", "UNEXPECTED_DATA_TYPE",
                     "SCHEMA_MISSING_COLUMN", "FEATURE_TYPE_LOW_FRACTION_PRESENT",
                     "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH", "COMPARATOR_L_INFTY_HIGH",
                     "LABEL_MEAN_SHIFT", "LABEL_CONSISTENCY_LOW")
_DRIFT_RULE = {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
               "properties": {"js": {"type": "number", "minimum": 0, "description": "numeric feature"},
                              "linf": {"type": "number", "minimum": 0, "description": "categorical feature"}}}


@dataclass(frozen=True)
class LabelChecksConfig(Section):
    """Checks of each window's label against the nearest earlier windows that training may use
    of the same **regime** (transforms/label_checks.py, docs/GATE.md). They report the anomaly
    kinds ``LABEL_MEAN_SHIFT`` and ``LABEL_CONSISTENCY_LOW``, which quarantine the window when
    ``blocking_anomalies`` names them (both do by default) and give WARN otherwise.

    A regime starts at a window in which a feature other than the label drifted (a drift score
    above its threshold, the one ``validation.drift_*`` sets), since a genuine feature drift may
    move the label's rate for good. The positive rate is compared only with usable windows of the
    window's regime; until the regime has one (the drift window itself is normally QUARANTINED by
    the drift, so at least the window after it), that check is not run and the consistency check
    uses the usable windows before the regime; the production-collapse screening
    (``gate.screening``) still sees those windows. A flipped label with no feature drift starts no
    regime, so it is compared with the windows before it. The manifest's ``quality.labels``
    records the regime, the windows each check used and why."""

    enabled: bool = True
    """Compute each window's label profile (positive rate, consistency AUC) and check it."""
    max_mean_shift: Optional[Annotated[float, Range(gt=0, le=1)]] = 0.15
    """Largest allowed change of the label's positive rate against the median of the reference
    windows (absolute, e.g. 0.40 -> 0.55 is a shift of 0.15). Inverting every label of a 40/60
    label moves it by 0.2. Sampling noise alone moves it by about sqrt(2p(1-p)/n): 0.03 for
    n = 500 labelled rows, so 0.15 is about five standard deviations there; for windows of
    fewer than about 200 rows raise it. null: no positive-rate check."""
    max_consistency_drop: Optional[Annotated[float, Range(gt=0, le=1)]] = 0.15
    """Largest allowed drop of the consistency AUC (how well a small logistic regression over the
    window's own features predicts its label, fitted and scored on alternate halves of the rows)
    against the median of the reference windows. Shuffled labels drop it to 0.5 and flipping 40%
    of them to about 0.52 on the synthetic sensors (0.8 when clean); a genuine concept change
    keeps it, since the new relation is as learnable as the old one. Its spread between
    stationary windows of 600 rows is about 0.02. null: no consistency check."""
    reference_windows: Annotated[int, Range(ge=1, le=48)] = 3
    """How many of the nearest earlier windows of the same regime (not QUARANTINED, or released)
    form the reference; windows sealed in the same run count too, by the verdict they get. The
    first window of a store has none and is not checked (its manifest says so)."""
    min_rows: Annotated[int, Range(ge=2)] = 100
    """Windows with fewer labelled rows are not checked (their numbers are too noisy)."""


@dataclass(frozen=True)
class ValidationConfig(Section):
    max_bad_fraction: Annotated[float, Range(ge=0, le=1)] = 0.05
    """A window whose dead-lettered records exceed this fraction of its records is QUARANTINED."""
    blocking_anomalies: tuple[str, ...] = _DEFAULT_BLOCKING
    """TFDV anomaly kinds (AnomalyInfo.Type names) that quarantine a window; any other anomaly
    gives WARN. Kinds found by the training/serving skew check are named ``SKEW_<kind>`` (e.g.
    ``SKEW_COMPARATOR_L_INFTY_HIGH``); the example-count bounds give ``COMPARATOR_LOW_NUM_EXAMPLES``
    and ``COMPARATOR_HIGH_NUM_EXAMPLES``. An unknown name is an error (a typo would never block)."""
    drift_js_threshold: Annotated[float, Range(ge=0)] = 0.1
    """Default Jensen-Shannon divergence threshold against the previous window, numeric features."""
    drift_linf_threshold: Annotated[float, Range(ge=0)] = 0.15
    """Default L-infinity distance threshold against the previous window, categorical features.
    Sampling noise alone moves a category's share by about sqrt(2p(1-p)/n): 0.04 for n = 300
    records per window, so 0.1 raised false alarms on stationary data (tests/transforms/test_drift.py) and
    0.15 is about four standard deviations. With large windows, lower it per feature (drift:)."""
    drift: Annotated[dict[str, dict[str, float]],
                     Schema({"type": "object", "additionalProperties": _DRIFT_RULE})] = field(default_factory=dict)
    """Per-feature drift thresholds that replace the defaults: ``{feature: {js: 0.2}}`` for a
    numeric feature, ``{feature: {linf: 0.3}}`` for a categorical one."""
    min_count_ratio: Optional[Annotated[float, Range(ge=0)]] = 0.5
    """A window with fewer than this fraction of the previous window's examples gets
    COMPARATOR_LOW_NUM_EXAMPLES (null: no lower bound)."""
    max_count_ratio: Optional[Annotated[float, Range(ge=0)]] = 2.0
    """A window with more than this multiple of the previous window's examples gets
    COMPARATOR_HIGH_NUM_EXAMPLES (null: no upper bound)."""
    serving_stats_uri: Optional[str] = None
    """TFDV statistics of serving data (binary DatasetFeatureStatisticsList, like a window's
    stats.pb) to check training/serving skew."""
    serving_data: Optional[str] = None
    """Alternative to serving_stats_uri: a glob of serving events (source.files.format); their
    statistics are computed when the run starts. The label may be absent (SERVING environment)."""
    skew_js_threshold: Annotated[float, Range(ge=0)] = 0.1
    """Jensen-Shannon divergence threshold of a window against serving data, numeric features."""
    skew_linf_threshold: Annotated[float, Range(ge=0)] = 0.1
    """L-infinity threshold of a window against serving data, categorical features."""
    labels: LabelChecksConfig = field(default_factory=LabelChecksConfig)
    """Label distribution and label-given-features checks (catch flipped and shuffled labels)."""

    def __post_init__(self):
        super().__post_init__()
        if self.blocking_anomalies != _DEFAULT_BLOCKING:  # the defaults are known kinds: skip the proto import
            self._check_anomaly_kinds()
        for name, rule in self.drift.items():
            if not isinstance(rule, Mapping) or len(rule) != 1 or next(iter(rule)) not in ("js", "linf"):
                raise Invalid(f"drift.{name}", "expected {js: <threshold>} (numeric feature) or "
                                               f"{{linf: <threshold>}} (categorical feature), got {rule!r}")
            value = next(iter(rule.values()))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise Invalid(f"drift.{name}", f"threshold {value!r} must be a number >= 0")
        if (self.min_count_ratio is not None and self.max_count_ratio is not None
                and self.min_count_ratio > self.max_count_ratio):
            raise Invalid(None, f"min_count_ratio {self.min_count_ratio} is above max_count_ratio "
                                f"{self.max_count_ratio}; lower the first or raise the second")
        if self.serving_stats_uri and self.serving_data:
            raise Invalid(None, "set serving_stats_uri or serving_data, not both")

    def _check_anomaly_kinds(self) -> None:
        from tensorflow_metadata.proto.v0 import anomalies_pb2  # protos only: no TensorFlow import

        names = set(anomalies_pb2.AnomalyInfo.Type.keys())
        # transforms.validation.SKEW_PREFIX, and transforms.label_checks.LABEL_KINDS
        known = names | {"SKEW_" + n for n in names} | {"LABEL_MEAN_SHIFT", "LABEL_CONSISTENCY_LOW"}
        for kind in self.blocking_anomalies:
            if kind not in known:
                close = sorted(k for k in known if k.split("_")[0] == kind.split("_")[0])[:8]
                raise Invalid("blocking_anomalies", f"{kind!r} is not a TFDV anomaly kind; similar kinds: "
                                                    f"{', '.join(close) or '(none)'}")

    @property
    def drift_overrides(self) -> dict:
        """feature -> (metric, threshold)."""
        return {name: (next(iter(rule)), float(next(iter(rule.values())))) for name, rule in self.drift.items()}


@dataclass(frozen=True)
class TransformConfig(Section):
    preprocessing_fn: str = "examples.sensors:preprocessing_fn"
    """``module:function`` of the tf.Transform preprocessing_fn (inputs dict -> outputs dict)."""
    scratch_dir: Optional[str] = None
    """Where tf.Transform keeps its temp files and stages the transform_fn while it analyzes, for
    storage roots TensorFlow cannot write (s3://: TensorFlow 2.16 has no S3 file system).
    tf.Transform writes there itself, so it must be a local path or gs://, and on a cluster runner
    every worker must see it (a shared mount). Unset: ``<root>/tmp/<run_id>/`` for local and gs://
    roots; for s3:// roots the driver's temporary directory, which only DirectRunner and
    PrismRunner (workers on the driver's machine) can use: other runners then refuse to start."""


@dataclass(frozen=True)
class TrainingConfig(Section):
    model_fn: str = "examples.sensors:model_fn"
    """``module:function`` building a compiled Keras model from the transformed feature spec."""
    epochs: Annotated[int, Range(ge=1)] = 3
    """Passes over the training windows."""
    batch_size: Annotated[int, Range(ge=1)] = 256
    """Examples per batch on each worker replica."""
    eval_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.2
    """Share of ids (by a hash of id_field) held out for evaluation."""
    max_windows: Annotated[int, Range(ge=1)] = 48
    """Rolling training range: train on at most this many of the newest sealed, non-quarantined
    windows (of the newest schema version)."""
    window_span: Optional[Duration] = None
    """Rolling training range as a time span (e.g. ``"7d"``): train only on windows that start
    less than this before the end of the newest usable window. With max_windows, the tighter of
    the two wins; the run record's ``range`` and ``skipped_windows`` say which windows each left
    out. null: max_windows alone."""
    eval_windows: Annotated[int, Range(ge=1)] = 1
    """How many of the newest windows provide the held-out evaluation examples."""
    analyze_range: bool = False
    """false: train on the published transform (``<root>/transforms/CURRENT``, what sealing
    applies; windows sealed under an older one are transformed at training time). true: each run
    analyzes ``transform.preprocessing_fn`` over exactly its training range, with tf.Transform's
    analyzer cache kept per window version under ``<root>/analyzer_cache/`` (a run that shares
    N-1 windows with an earlier one analyzes one window); the model is trained with, and its
    serving signature embeds, that transform, stored under ``<root>/transforms/<fingerprint>/``
    but not made CURRENT. The run record's and lineage's ``analysis`` say what was analyzed and
    what came from cache. Single-process training only: a multi-worker run needs the range's
    transform published already (docs/CONTROLLER.md, "Rolling training range")."""
    backup_dir: Optional[str] = None
    """Where Keras BackupAndRestore keeps the state of the last finished epoch (one folder per
    training input), so that a killed run resumes there. It must outlive the process (on
    Kubernetes a persistent volume, never the pod's /tmp), and every worker of a multi-worker job
    must see the same directory. Default: ``<storage.root>/train-backup`` when the storage root is
    a local path; with an object-store root (s3://, gs://) it must be set."""


@dataclass(frozen=True)
class PoliciesConfig(Section):
    """When ``ctpipe controller`` starts a training run. Any policy that fires starts one run;
    the run record names every policy that fired and why. A manual request (``ctpipe trigger``)
    always fires, whatever these say."""

    new_windows: Optional[Annotated[int, Range(ge=1)]] = 1
    """Start a run once this many new PASS windows (window versions the controller has not seen
    before, with verdict PASS) have been sealed since the last run. null: off."""
    drift: bool = True
    """Start a run when a newly sealed, usable window drifted from its predecessor: a feature's
    drift score (manifest ``quality.drift``, TFDV Jensen-Shannon / L-infinity) reached its
    threshold (validation.drift_js_threshold / drift_linf_threshold)."""
    schedule: Optional[str] = None
    """Start a run at these times: a five-field cron expression in UTC ("minute hour
    day-of-month month day-of-week", e.g. ``"0 */6 * * *"``; pipeline/cron.py has the syntax).
    A time that passed while no controller ran fires once at the next check. null: off."""

    def __post_init__(self):
        super().__post_init__()
        if self.schedule is not None:
            from pipeline.cron import parse

            try:
                parse(self.schedule)
            except ConfigError as exc:
                raise Invalid("schedule", str(exc).split(": ", 1)[1]) from None


@dataclass(frozen=True)
class KubernetesApiConfig(Section):
    """How the controller reaches the Kubernetes API server that keeps its Lease (``controller.lease:
    kubernetes://...``). Each field left null takes the pod's own: the service
    ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` and the service-account files under
    ``/var/run/secrets/kubernetes.io/serviceaccount``. No token is ever written here: only the path
    of the file that holds one."""

    api_server: Optional[str] = None
    """The API server's ``https://host:port`` URL (null: the in-cluster service)."""
    ca_file: Optional[str] = None
    """PEM file of the CA that signed the API server's certificate (null: the service account's
    ``ca.crt``)."""
    token_file: Optional[str] = None
    """File holding the bearer token the controller sends (null: the service account's ``token``,
    re-read at every request, since the kubelet rotates it)."""

    def __post_init__(self):
        super().__post_init__()
        if self.api_server is not None and not re.fullmatch(r"https://[^/?#\s]+/?", self.api_server):
            raise Invalid("api_server", f"{self.api_server!r} is not an https://host:port URL")


@dataclass(frozen=True)
class ControllerConfig(Section):
    """``ctpipe controller``: the loop around the training step (docs/CONTROLLER.md)."""

    policies: PoliciesConfig = field(default_factory=PoliciesConfig)
    """What starts a training run."""
    poll_interval: Duration = "60s"
    """How often the long-running controller looks for new windows, triggers and scheduled
    times (``--once`` looks once)."""
    lease: Optional[str] = None
    """Where the leader lease lives. null: on the storage root, ``<root>/locks/controller.lease``
    (conditional writes of the root's store). ``kubernetes://<namespace>/<lease-name>``: a
    ``coordination.k8s.io/v1`` Lease, for controller replicas in a Deployment (its service account
    needs get, create and update on leases: deploy/k8s/controller-rbac.yaml); the fencing token is
    the Lease's ``spec.leaseTransitions`` (docs/LEASE.md)."""
    kubernetes: KubernetesApiConfig = field(default_factory=KubernetesApiConfig)
    """How to reach the API server of a ``kubernetes://`` lease (defaults: the pod's own)."""
    lease_ttl: Duration = "30s"
    """TTL of the leader lease: of several controller replicas only the holder acts; a standby
    takes over once it has seen the lease unrenewed this long (at once when the holder's pid is
    gone on the same host). The holder renews it every sixth of this. At least 6s."""
    history: Annotated[int, Range(ge=1, le=10000)] = 100
    """How many of its latest decisions the controller keeps in its state file."""

    def __post_init__(self):
        super().__post_init__()
        for key, low in (("poll_interval", 1000), ("lease_ttl", 6000)):
            if duration_ms(getattr(self, key)) < low:
                raise Invalid(key, f"{getattr(self, key)!r} is shorter than {low // 1000}s")
        if self.lease is not None:
            if not re.fullmatch(r"kubernetes://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?",
                                self.lease):
                raise Invalid("lease", f"{self.lease!r} is not kubernetes://<namespace>/<lease-name> (lower-case "
                                       "Kubernetes names); leave it null for the lease on the storage root")

    def lease_path(self, root: str) -> str:
        """The leader lease's location for core/lock.py: ``<root>/locks/controller.lease``, or the
        Kubernetes Lease with the connection settings that are set."""
        if self.lease is None:
            from core import layout

            return layout.lease_path(root, "controller")
        from core.kube_lease import location_uri

        k = self.kubernetes
        return location_uri(self.lease, k.api_server, k.ca_file, k.token_file)


@dataclass(frozen=True)
class ThresholdConfig(Section):
    metric: Literal["auc", "accuracy", "log_loss", "example_count"] = "auc"
    """auc, accuracy, log_loss or example_count."""
    lower_bound: Optional[float] = None
    """Absolute: the candidate's value must be >= this."""
    upper_bound: Optional[float] = None
    """Absolute: the candidate's value must be <= this."""
    change_absolute: Optional[float] = None
    """Change vs production: candidate - production must not be worse than this (sign by
    higher_is_better: e.g. -0.01 allows a drop of at most 0.01 when higher is better)."""
    change_relative: Optional[float] = None
    """Like change_absolute, relative to the production value."""
    higher_is_better: Optional[bool] = None
    """Direction; defaults per metric (log_loss: lower is better; others higher)."""


@dataclass(frozen=True)
class ScreeningConfig(Section):
    """Before training, the production model scores the held-out split of every chosen window it
    was not trained on (pipeline/screening.py, docs/GATE.md). A window on which it *collapses* is
    quarantined for review (``ctpipe windows release``) instead of trained on, with the reason
    in its QUARANTINE.json; a large but ordinary drop is recorded as a concept change."""

    enabled: bool = True
    """Screen new windows with the production model (no production model: nothing to screen)."""
    collapse_auc: Annotated[float, Range(ge=0, le=0.5)] = 0.3
    """Far below chance: production's AUC on a window's held-out split under this quarantines the
    window. A model that ranks a window's labels this far the wrong way round meets labels
    inverted with respect to everything it was trained on; a new concept that no longer depends
    on the old features gives about 0.5."""
    concept_change_drop: Annotated[float, Range(gt=0, le=1)] = 0.15
    """A drop of production's AUC (its AUC at its own blessing minus its AUC on the window) of at
    least this much, without a collapse, is recorded as a concept change; the record is kept in
    the blessing of the model that gets through, and is what later drops are compared with."""
    collapse_drop_factor: Optional[Annotated[float, Range(gt=1)]] = 2.0
    """A drop larger than this multiple of the largest drop recorded at a past concept change
    (in the blessings of the registry's blessed versions) also quarantines the window. No
    concept change recorded yet: only ``collapse_auc`` applies, and the screening says so.
    null: this rule is off."""
    min_examples: Annotated[int, Range(ge=1)] = 30
    """Windows whose held-out split has fewer examples are not screened (the AUC is too noisy)."""


@dataclass(frozen=True)
class TrustedDataConfig(Section):
    """Evaluation on trusted data besides the newest windows: the held-out splits of windows the
    production model was trained on (data a blessed model was built from), and an optional pinned
    golden set. The candidate must not fall behind production there by more than
    ``max_regression`` (docs/GATE.md)."""

    enabled: bool = True
    """Evaluate candidate and production on trusted data and gate on it."""
    windows: Annotated[int, Range(ge=1, le=48)] = 4
    """How many of the newest windows of production's lineage provide trusted held-out examples
    (those still sealed and not quarantined since)."""
    max_regression: Annotated[float, Range(ge=0, le=1)] = 0.05
    """Largest allowed AUC drop of the candidate against production on each trusted set."""
    waive_on_concept_change: bool = True
    """Production's own windows describe the old concept: when the screening recorded a concept
    change on the newest evaluation window (and no collapse), the earlier-windows bound is
    reported but not applied, so a model of the new concept can get through. The golden set's
    bound is applied always (pin a new golden set when the world has changed)."""
    golden_examples: Optional[str] = None
    """Glob of TFRecord files of serialized raw tf.Examples with labels (``.gz`` files GZIP-
    compressed), a pinned evaluation set: local, s3:// or gs://."""
    golden_windows: tuple[str, ...] = ()
    """Window ids whose held-out splits (newest version) form a pinned evaluation set, e.g.
    ``["20261127T0100Z"]``; used with golden_examples when both are given."""
    min_examples: Annotated[int, Range(ge=1)] = 50
    """A trusted set with fewer examples is reported but not gated on."""


@dataclass(frozen=True)
class GateConfig(Section):
    thresholds: tuple[ThresholdConfig, ...] = (
        ThresholdConfig(metric="auc", lower_bound=0.7, change_absolute=-0.01),
        ThresholdConfig(metric="example_count", lower_bound=50),
    )
    """Thresholds checked for every candidate on the newest windows' held-out examples; change
    thresholds are skipped only when there is no production model yet (and the blessing says so)."""
    slice_feature: Optional[str] = None
    """Raw feature whose values slice the evaluation metrics (reported, not gated)."""
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)
    """Quarantine of windows on which the production model collapses (poisoned labels)."""
    trusted: TrustedDataConfig = field(default_factory=TrustedDataConfig)
    """No-regression bound on trusted data (earlier blessed windows, a golden set)."""

    def __post_init__(self):
        super().__post_init__()
        from core.layout import is_window_id

        for wid in self.trusted.golden_windows:
            if not is_window_id(wid):
                raise Invalid("trusted.golden_windows", f"{wid!r} is not a window id (YYYYMMDDTHHMMZ, e.g. "
                                                        "20261127T0100Z; see `ctpipe windows list`)")


@dataclass(frozen=True)
class RegistryConfig(Section):
    uri: str = "./demo-work/registry"
    """Local dir, s3://, gs:// (filesystem backend) or ``mlflow+http://host:port`` (MLflow)."""
    model_name: str = "ctpipe-model"
    """Name under which candidates are pushed and aliases (production) are kept."""


@dataclass(frozen=True)
class MetricsConfig(Section):
    port: Annotated[int, Range(ge=0, le=65535)] = 0
    """Serve /metrics on this port during long runs (0 = do not serve)."""
    bind: str = "0.0.0.0"
    """Address the /metrics server listens on (127.0.0.1 to keep it on loopback)."""
    pushgateway: Optional[str] = None
    """host:port of a Prometheus Pushgateway that batch runs push to when they end."""


_S3_ENDPOINT = re.compile(r"https?://[^\s/@]+(/[^\s@]*)?")


@dataclass(frozen=True)
class S3Config(Section):
    endpoint_url: Optional[str] = None
    """``http(s)://host:port`` of an S3-compatible server (MinIO, Ceph, a local moto server);
    leave unset for AWS. Every client ctpipe starts uses it: Beam's S3 file system (backfill,
    stream, windows, schemas, transforms, the file registry), ctpipe's own checks and MLflow's
    artifact uploads. Credentials are not set here: boto3 reads ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` (/ ``AWS_SESSION_TOKEN``) from the environment, or a mounted
    ``AWS_SHARED_CREDENTIALS_FILE`` with ``AWS_PROFILE``, or the workload's role."""
    region: Optional[str] = None
    """S3 region (e.g. ``eu-west-1``); unset: boto3's default (``AWS_DEFAULT_REGION``, the profile)."""

    def __post_init__(self):
        super().__post_init__()
        url = self.endpoint_url
        if url is not None and "@" in url:  # never echo it: the part before @ may be a secret
            raise Invalid("endpoint_url", "holds credentials (user:secret@); write only http(s)://host:port and "
                                          "put the keys in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        if url is not None and not _S3_ENDPOINT.fullmatch(url):
            raise Invalid("endpoint_url", f"{url!r} is not an http:// or https:// URL such as http://127.0.0.1:9000")


@dataclass(frozen=True)
class ObjectStoreConfig(Section):
    s3: S3Config = field(default_factory=S3Config)
    """The S3 endpoint and region for every s3:// URI (storage.root, source.files.uri, registry.uri,
    validation.serving_*). GCS (gs://) needs no settings: its credentials are Application Default
    Credentials (``GOOGLE_APPLICATION_CREDENTIALS`` or the workload's identity)."""
    connect_timeout: Duration = "5s"
    """How long ctpipe waits to connect to an object store before it gives up on an attempt."""
    read_timeout: Duration = "30s"
    """How long ctpipe waits for an object store to answer a request before it gives up on an attempt."""
    max_attempts: Annotated[int, Range(ge=1, le=20)] = 3
    """Attempts per request (the first one included). Every command first asks each bucket it will
    use once, within these limits: an endpoint that does not answer, refused credentials or a
    missing bucket stop it with exit code 8 and one line, before anything is written."""

    def __post_init__(self):
        super().__post_init__()
        for key in ("connect_timeout", "read_timeout"):
            if duration_ms(getattr(self, key)) <= 0:
                raise Invalid(key, f"{getattr(self, key)!r} must be longer than zero, e.g. '5s'")

    def timeouts_s(self) -> tuple[float, float]:
        return duration_ms(self.connect_timeout) / 1000, duration_ms(self.read_timeout) / 1000


@dataclass(frozen=True)
class RetentionConfig(Section):
    """What ``ctpipe gc`` may remove (pipeline/gc.py). Never removed, whatever these say: each
    window's newest version, the versions in the lineage of a model an alias points at or
    pointed at (production and its rollback targets), pending parts of windows not sealed yet or
    of a stream cycle in flight, and anything of a source whose stream holds its lock."""

    keep_superseded_versions: Annotated[int, Range(ge=0)] = 1
    """Superseded versions of each window kept besides its newest (the newest superseded first)."""
    superseded_after: Duration = "7d"
    """A superseded version is removed only once the version that replaced it is this old."""
    pending_parts: Optional[Duration] = None
    """Remove ``ctpipe stream``'s part files of sealed windows whose end is this far behind the
    watermark (e.g. "30d"). Those windows can no longer be resealed from all their records, so
    later records for them go to <root>/late/ as under ``window.late_data: side_output``.
    null: keep parts (every late record can make a new version)."""
    dead_letters: Optional[Duration] = None
    """Remove dead-letter days (<root>/deadletter/<YYYYMMDD>/) older than this. null: keep them."""
    run_records: Optional[Duration] = None
    """Remove run records (<root>/runs/<run_id>.json) older than this. null: keep them."""
    scratch_after: Duration = "1d"
    """Scratch of runs that never finished (<root>/tmp/<run_id>/, <root>/runs/<run_id>/ without a
    run record) and driver temp dirs of ctpipe processes that are gone are removed once this old
    (finished runs' scratch and hand-off results go at once)."""


@dataclass(frozen=True)
class Config(Section):
    """ctpipe.yaml: one ctpipe deployment."""

    storage: StorageConfig = field(default_factory=StorageConfig)
    """The storage root."""
    source: SourceConfig = field(default_factory=SourceConfig)
    """Where events come from: files (history, backfills) and Kafka (live)."""
    event_time: EventTimeConfig = field(default_factory=EventTimeConfig)
    """Which field of an event holds its event time, and how it is written."""
    id_field: str = "id"
    """Unique id of each event; duplicates within a window go to dead-letter."""
    label_field: str = "label"
    """Training label; may be absent from serving data."""
    window: WindowConfig = field(default_factory=WindowConfig)
    """Fixed event-time windows and late data."""
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    """Per-window validation: dead-letter share, TFDV anomalies, drift and skew."""
    transform: TransformConfig = field(default_factory=TransformConfig)
    """The tf.Transform preprocessing."""
    training: TrainingConfig = field(default_factory=TrainingConfig)
    """Training on sealed windows."""
    gate: GateConfig = field(default_factory=GateConfig)
    """The evaluation gate a candidate must pass to be pushed."""
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    """The model registry."""
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """``ctpipe controller``: training policies, polling, the leader lease."""
    object_store: ObjectStoreConfig = field(default_factory=ObjectStoreConfig)
    """How every command reaches s3:// and gs:// (endpoint, region, timeouts); never credentials."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """Prometheus metrics."""
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    """What ``ctpipe gc`` removes, and when."""
    runner_config: str = "runner_configs/direct.yaml"
    """Beam pipeline options file; relative paths resolve against the config file's folder,
    then the ctpipe installation."""


# --------------------------------------------------------------------------- loading


def config_from_dict(data: Mapping | None) -> Config:
    """The Config of a parsed ctpipe.yaml (``None``: the defaults); ConfigError names a bad key."""
    return build(Config, data or {}, "")


def load_config(path: str | None) -> Config:
    """Load the YAML config. ``None`` means ./ctpipe.yaml if it exists, else built-in defaults."""
    if path is None:
        if not os.path.exists(DEFAULT_CONFIG_FILE):
            return Config()
        path = DEFAULT_CONFIG_FILE
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist; pass --config FILE or create it "
                          "(see examples/ctpipe.yaml)")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from exc
    config = config_from_dict(data)
    base = os.path.dirname(os.path.abspath(path))
    if not os.path.isabs(config.runner_config) and os.path.exists(os.path.join(base, config.runner_config)):
        config = config.replace(runner_config=os.path.join(base, config.runner_config))
    return config


def to_dict(config) -> dict:
    """Plain JSON-able form, lists for tuples (for hashing into lineage and for ``ctpipe config show``)."""
    return to_plain(config)



# --------------------------------------------------------------------------- showing


_URL_CREDENTIALS = re.compile(r"(^|://)([^\s:/@]+):([^\s@/]+)@")
REDACTED = "***"


def redacted(config) -> dict:
    """``to_dict(config)`` safe to print: a password inside a URL (``user:password@host``) becomes
    ``***``. The Kafka secret settings are names of environment variables and paths of mounted
    files, never the secrets, so they are shown as they are; their contents are never read here."""
    def scrub(value):
        if isinstance(value, str):
            return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{m.group(2)}:{REDACTED}@", value)
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return scrub(to_dict(config))


def json_schema() -> dict:
    """JSON Schema (draft 2020-12) of ctpipe.yaml, for editors and CI to validate config files."""
    return json_schema_of(Config, "ctpipe.yaml")
