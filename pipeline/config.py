"""Typed, frozen configuration of a ctpipe deployment, read from one YAML file.

Every section is a frozen dataclass; every field is documented where it is declared. Unknown
keys are rejected with the key's full path and the list of keys that are allowed, so a typo never
silently falls back to a default. Secrets never live here: the Kafka section names environment
variables or files that hold them.

Durations are strings such as ``"90s"``, ``"15m"``, ``"1h"`` or ``"1d"``.
"""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import yaml

from core.errors import ConfigError

DEFAULT_CONFIG_FILE = "ctpipe.yaml"

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float, *, key: str = "duration") -> float:
    """Seconds in a duration string ("15m", "1h"); bare numbers are seconds."""
    if isinstance(text, bool):
        raise ConfigError(f"{key}: expected a duration such as '1h', got {text!r}")
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ConfigError(
            f"{key}: {text!r} is not a duration; write a number and a unit, e.g. '90s', '15m', '1h', '1d'")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class StorageConfig:
    root: str = "./demo-work/store"
    """Where windows, checkpoints, dead letters, schemas and transforms live: a local
    directory, ``s3://bucket/prefix`` or ``gs://bucket/prefix`` (through Beam FileSystems)."""


@dataclass(frozen=True)
class FilesSourceConfig:
    uri: str = ""
    """Glob of input files (local, s3://, gs://), e.g. ``data/events-*.jsonl``."""
    format: str = "jsonl"
    """One of ``jsonl``, ``csv`` (header row required) or ``parquet``."""

    def __post_init__(self):
        if self.format not in ("jsonl", "csv", "parquet"):
            raise ConfigError(
                f"source.files.format: {self.format!r} is not supported; use jsonl, csv or parquet")


@dataclass(frozen=True)
class KafkaSourceConfig:
    bootstrap_servers: str = ""
    """Comma-separated host:port list of the Kafka cluster."""
    topic: str = ""
    """Topic holding JSON event values."""
    group_id: str = "ctpipe"
    """Consumer group whose offsets ctpipe commits after each checkpoint (for lag monitoring);
    the data path itself uses manual partition assignment and never joins the group."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: Optional[str] = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 when security_protocol is SASL_*."""
    sasl_username_env: Optional[str] = None
    """Name of the environment variable that holds the SASL user name."""
    sasl_password_env: Optional[str] = None
    """Name of the environment variable that holds the SASL password."""
    sasl_password_file: Optional[str] = None
    """Path of a mounted file whose content is the SASL password (alternative to the env var)."""
    ssl_cafile: Optional[str] = None
    """CA bundle used to verify the brokers' certificates."""
    ssl_check_hostname: bool = True
    """Check that the broker certificate matches its host name (keep on in production)."""
    max_message_bytes: int = 1_000_000
    """Values larger than this go to dead-letter as oversize."""
    isolation_level: str = "read_committed"
    """read_committed (default): records of aborted transactions never enter a window and a cycle
    reads up to the last stable offset, so it never waits on an open transaction;
    read_uncommitted reads every record up to the high watermark, aborted ones included."""
    max_records_per_split: int = 20_000
    """Offset ranges are split into pieces of at most this many records across Beam workers."""
    idle_partition_timeout: Optional[str] = None
    """A partition that has delivered no records for this long (e.g. "30m") stops holding the
    watermark back; its later records may then be late (see window.late_data). Off by default:
    the watermark waits for every partition that has ever had data."""

    def idle_timeout_s(self) -> Optional[float]:
        if self.idle_partition_timeout is None:
            return None
        return parse_duration(self.idle_partition_timeout, key="source.kafka.idle_partition_timeout")

    def __post_init__(self):
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ConfigError(
                f"source.kafka.security_protocol: {self.security_protocol!r} is not one of "
                "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
        self.idle_timeout_s()  # validates the duration
        if self.sasl_mechanism not in (None, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise ConfigError(
                f"source.kafka.sasl_mechanism: {self.sasl_mechanism!r} is not one of "
                "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
        if self.isolation_level not in ("read_committed", "read_uncommitted"):
            raise ConfigError(
                f"source.kafka.isolation_level: {self.isolation_level!r} is not one of "
                "read_committed, read_uncommitted")


@dataclass(frozen=True)
class SourceConfig:
    files: FilesSourceConfig = field(default_factory=FilesSourceConfig)
    """Object-store / local files: history and backfills."""
    kafka: Optional[KafkaSourceConfig] = None
    """Live events; needed by ``ctpipe stream``."""


@dataclass(frozen=True)
class EventTimeConfig:
    field: str = "ts"
    """Name of the event-time field in each event."""
    format: str = "auto"
    """``iso8601``, ``epoch_s``, ``epoch_ms`` or ``auto`` (strings are ISO-8601; numbers above
    1e11 are milliseconds, else seconds)."""

    def __post_init__(self):
        if self.format not in ("auto", "iso8601", "epoch_s", "epoch_ms"):
            raise ConfigError(
                f"event_time.format: {self.format!r} is not one of auto, iso8601, epoch_s, epoch_ms")


@dataclass(frozen=True)
class WindowConfig:
    size: str = "1h"
    """Length of a fixed event-time window; must divide one day evenly."""
    allowed_lateness: str = "15m"
    """How long after a window's end its data may still arrive before the window is sealed."""
    late_data: str = "new_version"
    """What happens to a record for an already sealed window: ``new_version`` (the window is
    re-sealed as v<N+1> holding the old records plus the late ones) or ``side_output`` (the
    record is written to <root>/late/ and counted, the window stays as it is)."""

    def __post_init__(self):
        size = parse_duration(self.size, key="window.size")
        if size <= 0 or 86400 % size:
            raise ConfigError(f"window.size: {self.size!r} must be positive and divide one day evenly")
        parse_duration(self.allowed_lateness, key="window.allowed_lateness")
        if self.late_data not in ("new_version", "side_output"):
            raise ConfigError(
                f"window.late_data: {self.late_data!r} is not one of new_version, side_output")

    @property
    def size_s(self) -> int:
        return int(parse_duration(self.size))

    @property
    def lateness_s(self) -> int:
        return int(parse_duration(self.allowed_lateness))


@dataclass(frozen=True)
class ValidationConfig:
    max_bad_fraction: float = 0.05
    """A window whose dead-lettered records exceed this fraction of its records is QUARANTINED."""
    blocking_anomalies: tuple = ("SCHEMA_NEW_COLUMN", "ENUM_TYPE_UNEXPECTED_STRING_VALUES",
                                 "UNEXPECTED_DATA_TYPE", "SCHEMA_MISSING_COLUMN",
                                 "FEATURE_TYPE_LOW_FRACTION_PRESENT", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
                                 "COMPARATOR_L_INFTY_HIGH")
    """TFDV anomaly kinds (AnomalyInfo.Type names) that quarantine a window; any other anomaly
    gives WARN. Kinds found by the training/serving skew check are named ``SKEW_<kind>`` (e.g.
    ``SKEW_COMPARATOR_L_INFTY_HIGH``); the example-count bounds give ``COMPARATOR_LOW_NUM_EXAMPLES``
    and ``COMPARATOR_HIGH_NUM_EXAMPLES``. An unknown name is an error (a typo would never block)."""
    drift_js_threshold: float = 0.1
    """Default Jensen-Shannon divergence threshold against the previous window, numeric features."""
    drift_linf_threshold: float = 0.15
    """Default L-infinity distance threshold against the previous window, categorical features.
    Sampling noise alone moves a category's share by about sqrt(2p(1-p)/n): 0.04 for n = 300
    records per window, so 0.1 raised false alarms on stationary data (tests/test_drift.py) and
    0.15 is about four standard deviations. With large windows, lower it per feature (drift:)."""
    drift: dict = field(default_factory=dict)
    """Per-feature drift thresholds that replace the defaults: ``{feature: {js: 0.2}}`` for a
    numeric feature, ``{feature: {linf: 0.3}}`` for a categorical one."""
    min_count_ratio: Optional[float] = 0.5
    """A window with fewer than this fraction of the previous window's examples gets
    COMPARATOR_LOW_NUM_EXAMPLES (null: no lower bound)."""
    max_count_ratio: Optional[float] = 2.0
    """A window with more than this multiple of the previous window's examples gets
    COMPARATOR_HIGH_NUM_EXAMPLES (null: no upper bound)."""
    serving_stats_uri: Optional[str] = None
    """TFDV statistics of serving data (binary DatasetFeatureStatisticsList, as
    tfdv.write_stats_text's binary sibling / a window's stats.pb) to check training/serving skew."""
    serving_data: Optional[str] = None
    """Alternative to serving_stats_uri: a glob of serving events (source.files.format); their
    statistics are computed when the run starts. The label may be absent (SERVING environment)."""
    skew_js_threshold: float = 0.1
    """Jensen-Shannon divergence threshold of a window against serving data, numeric features."""
    skew_linf_threshold: float = 0.1
    """L-infinity threshold of a window against serving data, categorical features."""

    def __post_init__(self):
        from tensorflow_metadata.proto.v0 import anomalies_pb2  # protos only: no TensorFlow import

        names = set(anomalies_pb2.AnomalyInfo.Type.keys())
        known = names | {"SKEW_" + n for n in names}  # transforms.validation.SKEW_PREFIX
        for kind in self.blocking_anomalies:
            if kind not in known:
                close = sorted(k for k in known if k.split("_")[0] == str(kind).split("_")[0])[:8]
                raise ConfigError(f"validation.blocking_anomalies: {kind!r} is not a TFDV anomaly kind; "
                                  f"similar kinds: {', '.join(close) or '(none)'}")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError(f"validation.max_bad_fraction: {self.max_bad_fraction} must be between 0 and 1")
        if not isinstance(self.drift, Mapping):
            raise ConfigError(f"validation.drift: expected a mapping of feature -> {{js: x}} or {{linf: y}}, "
                              f"got {self.drift!r}")
        for name, rule in self.drift.items():
            if not isinstance(rule, Mapping) or len(rule) != 1 or next(iter(rule)) not in ("js", "linf"):
                raise ConfigError(f"validation.drift.{name}: expected {{js: <threshold>}} or "
                                  f"{{linf: <threshold>}}, got {rule!r}")
            value = next(iter(rule.values()))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"validation.drift.{name}: threshold {value!r} must be a number >= 0")
        if (self.min_count_ratio is not None and self.max_count_ratio is not None
                and self.min_count_ratio > self.max_count_ratio):
            raise ConfigError(f"validation.min_count_ratio {self.min_count_ratio} is above "
                              f"validation.max_count_ratio {self.max_count_ratio}")
        if self.serving_stats_uri and self.serving_data:
            raise ConfigError("validation: set serving_stats_uri or serving_data, not both")

    @property
    def drift_overrides(self) -> dict:
        """feature -> (metric, threshold)."""
        return {name: (next(iter(rule)), float(next(iter(rule.values())))) for name, rule in self.drift.items()}


@dataclass(frozen=True)
class TransformConfig:
    preprocessing_fn: str = "examples.sensors:preprocessing_fn"
    """``module:function`` of the tf.Transform preprocessing_fn (inputs dict -> outputs dict)."""


@dataclass(frozen=True)
class TrainingConfig:
    model_fn: str = "examples.sensors:model_fn"
    """``module:function`` building a compiled Keras model from the transformed feature spec."""
    epochs: int = 3
    batch_size: int = 256
    eval_fraction: float = 0.2
    """Share of ids (by a hash of id_field) held out for evaluation."""
    max_windows: int = 48
    """Train on at most this many of the newest sealed, non-quarantined windows."""
    eval_windows: int = 1
    """How many of the newest windows provide the held-out evaluation examples."""

    def __post_init__(self):
        if not 0 < self.eval_fraction < 1:
            raise ConfigError(f"training.eval_fraction: {self.eval_fraction} must be between 0 and 1")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("training.epochs and training.batch_size must be at least 1")


@dataclass(frozen=True)
class ThresholdConfig:
    metric: str = "auc"
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

    def __post_init__(self):
        if self.metric not in ("auc", "accuracy", "log_loss", "example_count"):
            raise ConfigError(
                f"gate.thresholds.metric: {self.metric!r} is not one of auc, accuracy, log_loss, example_count")


@dataclass(frozen=True)
class GateConfig:
    thresholds: tuple = (
        ThresholdConfig(metric="auc", lower_bound=0.7, change_absolute=-0.01),
        ThresholdConfig(metric="example_count", lower_bound=50),
    )
    """Thresholds checked for every candidate; change thresholds are skipped only when there is
    no production model yet (and the blessing says so)."""
    slice_feature: Optional[str] = None
    """Raw feature whose values slice the evaluation metrics (reported, not gated)."""


@dataclass(frozen=True)
class RegistryConfig:
    uri: str = "./demo-work/registry"
    """Local dir, s3://, gs:// (filesystem backend) or ``mlflow+http://host:port`` (MLflow)."""
    model_name: str = "ctpipe-model"


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 0
    """Serve /metrics on this port during long runs (0 = do not serve)."""
    bind: str = "0.0.0.0"
    """Address the /metrics server listens on (127.0.0.1 to keep it on loopback)."""
    pushgateway: Optional[str] = None
    """host:port of a Prometheus Pushgateway that batch runs push to when they end."""


@dataclass(frozen=True)
class Config:
    storage: StorageConfig = field(default_factory=StorageConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    event_time: EventTimeConfig = field(default_factory=EventTimeConfig)
    id_field: str = "id"
    """Unique id of each event; duplicates within a window go to dead-letter."""
    label_field: str = "label"
    """Training label; may be absent from serving data."""
    window: WindowConfig = field(default_factory=WindowConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    runner_config: str = "runner_configs/direct.yaml"
    """Beam pipeline options file; relative paths resolve against the config file's folder,
    then the ctpipe installation."""

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- loading


def _build(cls, data: Any, path: str):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys by their full path."""
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(f"unknown key {where!r}; allowed keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{path}.{name}" if path else name)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. wrong arity for a nested dataclass
        raise ConfigError(f"{path or 'config'}: {exc}") from exc


def _coerce(hint, value, path):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(inner, value, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if path.endswith("gate.thresholds"):
            return tuple(_build(ThresholdConfig, v, f"{path}[{i}]") for i, v in enumerate(value))
        return tuple(value)
    if hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    return value


def config_from_dict(data: Mapping | None) -> Config:
    return _build(Config, data or {}, "")


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


def to_dict(config: Config) -> dict:
    """Plain-dict form (for hashing into lineage and for ``ctpipe config show``)."""
    return dataclasses.asdict(config)
