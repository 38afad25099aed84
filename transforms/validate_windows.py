"""Validation of one window: settings from the config, the validator, and quality numbers.

A window is checked against the schema (TFDV anomalies), against the window before it (drift),
optionally against serving statistics (skew), for its share of dead-lettered records, and for
its labels (transforms/label_checks.py: positive rate and label-given-features consistency
against the nearest earlier windows usable for training of the same regime); the result is a
Verdict (PASS / WARN / QUARANTINED) and the window's data-quality numbers. Which windows it is compared with is the
sealing composite's choice (transforms/seal.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from tensorflow_metadata.proto.v0 import statistics_pb2

from core import storage, window_store
from core.errors import ConfigError
from core.schema_store import schema_from_text
from transforms.label_checks import Candidate, LabelCheckSettings, check_labels, choose_references, feature_drift
from transforms.validation import (
    LINF,
    decide,
    distribution_scores,
    feature_thresholds,
    validate_skew,
    validate_window,
    with_drift_comparators,
    with_skew_comparators,
)


@dataclass(frozen=True)
class ValidationSettings:
    schema_text: str
    window_size_s: int
    blocking: tuple
    max_bad_fraction: float
    js_threshold: float
    linf_threshold: float
    skip_drift: tuple
    drift_overrides: tuple = ()
    """((feature, metric, threshold), ...) from validation.drift."""
    count_ratio: Optional[tuple] = None
    """(min, max) example count relative to the previous window; None: unbounded."""
    serving_stats: Optional[bytes] = None
    """Serialized DatasetFeatureStatisticsList of serving data; None: no skew check."""
    skew_js_threshold: float = 0.1
    skew_linf_threshold: float = 0.1
    labels: Optional[LabelCheckSettings] = None
    """validation.labels; None: no label checks."""

    @classmethod
    def from_config(cls, config, schema_text: str) -> "ValidationSettings":
        v = config.validation
        serving = load_serving_stats(config, schema_text)
        count_ratio = None
        if v.min_count_ratio is not None or v.max_count_ratio is not None:
            count_ratio = (v.min_count_ratio, v.max_count_ratio)
        return cls(schema_text, config.window.size_s, tuple(v.blocking_anomalies), v.max_bad_fraction,
                   v.drift_js_threshold, v.drift_linf_threshold,
                   (config.id_field, config.event_time.field),
                   tuple((f, m, t) for f, (m, t) in sorted(v.drift_overrides.items())), count_ratio,
                   None if serving is None else serving.SerializeToString(deterministic=True),
                   v.skew_js_threshold, v.skew_linf_threshold, label_check_settings(config))

    @property
    def overrides(self) -> dict:
        return {f: (m, t) for f, m, t in self.drift_overrides}


def label_check_settings(config) -> Optional[LabelCheckSettings]:
    """The label checks of ``validation.labels`` (None when disabled)."""
    lab = config.validation.labels
    if not lab.enabled:
        return None
    return LabelCheckSettings(config.label_field, (config.id_field, config.event_time.field), lab.max_mean_shift,
                              lab.max_consistency_drop, lab.reference_windows, lab.min_rows)


def stored_label_candidates(root: str, wid: str, settings: LabelCheckSettings,
                            skip: frozenset = frozenset()) -> Iterator[Candidate]:
    """The sealed windows before ``wid`` (newest version of each, newest window first, ids in
    ``skip`` left out: this run's content replaces them) as label-reference candidates: their
    label profile, whether training may use them (QUARANTINED ones only once released), and the
    feature drift recorded in their manifest. A generator: the store is read only as far as the
    reference choice needs."""
    for earlier in reversed([i for i in window_store.sealed_ids(root) if i < wid and i not in skip]):
        window = window_store.latest_sealed(root, earlier)
        if window is None:
            continue
        quality = window.manifest.get("quality") or {}
        drift, labels = quality.get("drift") or {}, quality.get("labels") or {}
        yield Candidate(earlier, labels.get("profile"), window.usable_for_training,
                        feature_drift(drift.get("features"), settings), drift.get("against"),
                        (labels.get("regime") or {}).get("start"))


def merge_candidates(in_run: Sequence[Candidate], stored: Iterable[Candidate]) -> Iterator[Candidate]:
    """Two newest-first candidate sequences merged newest first (``stored`` must not hold the ids
    of ``in_run``); ``stored`` is read lazily."""
    run = sorted(in_run, key=lambda c: c.window_id, reverse=True)
    i = 0
    for c in stored:
        while i < len(run) and run[i].window_id > c.window_id:
            yield run[i]
            i += 1
        yield c
    yield from run[i:]


def load_serving_stats(config, schema_text: str) -> Optional[statistics_pb2.DatasetFeatureStatisticsList]:
    """Serving statistics named by validation.serving_stats_uri, or computed from the events of
    validation.serving_data (decoded with the schema's types, label optional); None if neither."""
    v = config.validation
    if v.serving_stats_uri:
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        try:
            stats.ParseFromString(storage.read_bytes(v.serving_stats_uri))
        except Exception as exc:
            raise ConfigError(f"validation.serving_stats_uri {v.serving_stats_uri!r} is not a binary "
                              f"DatasetFeatureStatisticsList ({exc}); point it at a stats.pb file") from exc
        if not stats.datasets:
            raise ConfigError(f"validation.serving_stats_uri {v.serving_stats_uri!r} holds no dataset")
        return stats
    if v.serving_data:
        return serving_data_statistics(v.serving_data, config.source.files.format, schema_text,
                                       config.event_time.field, config.id_field, config.event_time.format)
    return None


def serving_data_statistics(pattern: str, fmt: str, schema_text: str, event_time_field: str, id_field: str,
                            event_time_format: str = "auto") -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of serving events (all files matching ``pattern``); undecodable lines are
    skipped and counted in the dataset name, since serving data is only a reference here."""
    from core.records import Event
    from transforms.arrow import events_to_record_batch
    from transforms.decode import DecodeSpec, decode_record
    from transforms.sources import _READERS, match_files
    from transforms.validation import feature_types, window_statistics

    types = feature_types(schema_from_text(schema_text))
    spec = DecodeSpec(event_time_field, id_field, event_time_format, types)
    events = []
    for path, _size in match_files(pattern):
        for record in _READERS[fmt](path):
            decoded = decode_record(record, spec)
            if isinstance(decoded, Event):
                events.append(decoded)
    if not events:
        raise ConfigError(f"validation.serving_data {pattern!r}: no decodable serving events")
    return window_statistics(events_to_record_batch(events, types), "serving")


def load_window_stats(window: window_store.SealedWindow) -> statistics_pb2.DatasetFeatureStatisticsList:
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    stats.ParseFromString(storage.read_bytes(storage.join(window.path, window.manifest["validation"]["stats_file"])))
    return stats


def quality_of(stats, records: int, dead: int, dead_by_reason: dict, timeliness: Optional[dict] = None) -> dict:
    """Data-quality numbers of a window: completeness (1 - missing ratio per feature), validity
    (share of records that broke no decode or schema rule, with the violations by reason),
    uniqueness (share of records whose id was not a duplicate) and timeliness (ingest minus
    event time, seconds; only when the source sets ingest times, i.e. Kafka)."""
    dataset = stats.datasets[0]
    completeness = {}
    for feature in dataset.features:
        name = feature.path.step[0] if feature.path.step else feature.name
        common = feature.num_stats.common_stats if feature.HasField("num_stats") else (
            feature.string_stats.common_stats if feature.HasField("string_stats") else None)
        if common is not None and dataset.num_examples:
            completeness[name] = round(1 - common.num_missing / dataset.num_examples, 6)
    total = records + dead
    dupes = dead_by_reason.get("duplicate_id", 0)
    invalid = dead - dupes
    out = {
        "records": records,
        "dead_letters": dead,
        "dead_letter_reasons": dict(sorted(dead_by_reason.items())),
        "completeness": dict(sorted(completeness.items())),
        "validity": round(1 - invalid / total, 6) if total else 1.0,
        "uniqueness": round(1 - dupes / total, 6) if total else 1.0,
    }
    if timeliness:
        out["timeliness"] = timeliness
    return out


def timeliness_of(lags_s) -> Optional[dict]:
    """p50 / p95 / max of ingest-minus-event-time lags (seconds, a list or an array) of a window;
    None if no lags."""
    if len(lags_s) == 0:
        return None
    ordered = np.sort(np.asarray(lags_s, dtype=np.float64))

    def pick(q):
        return round(float(ordered[min(len(ordered) - 1, int(q * len(ordered)))]), 3)

    return {"records": len(ordered), "p50_s": pick(0.5), "p95_s": pick(0.95), "max_s": round(float(ordered[-1]), 3)}


class WindowValidator:
    """Validates one window at a time: schema anomalies, drift against a previous window, skew
    against serving statistics, the bad-record fraction, and the window's quality numbers.

    Built once per worker from ``ValidationSettings`` (the schema with comparators is derived
    here, not shipped); ``validate`` is pure given its inputs.
    """

    def __init__(self, settings: ValidationSettings):
        self.settings = settings
        base = schema_from_text(settings.schema_text)
        self._schema = with_drift_comparators(base, settings.js_threshold, settings.linf_threshold,
                                              settings.skip_drift, settings.overrides, settings.count_ratio)
        self._thresholds = feature_thresholds(base, settings.js_threshold, settings.linf_threshold,
                                              settings.overrides, settings.skip_drift)
        self._serving = None
        if settings.serving_stats is not None:
            self._serving = statistics_pb2.DatasetFeatureStatisticsList()
            self._serving.ParseFromString(settings.serving_stats)
            self._skew_schema = with_skew_comparators(base, settings.skew_js_threshold,
                                                      settings.skew_linf_threshold, settings.skip_drift)
            skewed = {x.name for x in self._skew_schema.feature if x.HasField("skew_comparator")}
            self._skew_thresholds = {
                f: (m, settings.skew_js_threshold if m != LINF else settings.skew_linf_threshold)
                for f, (m, _t) in self._thresholds.items() if f in skewed}

    def validate(self, wid: str, stats, previous, previous_id: Optional[str], dead_by_reason: dict,
                 records: int, lags_s: list = (), label_profile: Optional[dict] = None,
                 label_candidates: Iterable = ()):
        """(Verdict, quality dict) of window ``wid`` given its statistics, the statistics of the
        window it is compared with (None: no drift check), its dead letters by reason, its
        record count, and its label profile with the earlier windows as label-reference
        candidates (transforms.label_checks.Candidate, newest first; read only as far as needed).
        The label references follow the regime (transforms/label_checks.py, choose_references):
        this window's own feature drift, or the newest drifted candidate, starts it."""
        s = self.settings
        anomalies = validate_window(stats, self._schema, previous)
        skew = validate_skew(stats, self._skew_schema, self._serving) if self._serving is not None else None
        dead = sum(dead_by_reason.values())
        drift_scores = distribution_scores(stats, previous, self._thresholds) if previous else {}
        labels = None
        if s.labels is not None:
            chosen = choose_references(wid, feature_drift(drift_scores, s.labels), previous_id,
                                       label_candidates, s.labels)
            labels = check_labels(label_profile, chosen, s.labels)
        extra = [(s.labels.label_field, kind, text) for kind, text in labels["anomalies"]] if labels else []
        verdict = decide(anomalies, s.blocking, dead, records + dead, s.max_bad_fraction, skew, extra)
        quality = quality_of(stats, records, dead, dead_by_reason, timeliness_of(lags_s))
        if labels is not None:
            quality["labels"] = {"profile": label_profile, "regime": labels["regime"],
                                 "reference_windows": labels["reference_windows"],
                                 "references": labels["references"], "reference": labels["reference"],
                                 "skipped": labels["skipped"], "anomalies": [kind for kind, _ in labels["anomalies"]]}
        quality["drift"] = {"against": previous_id, "features": drift_scores}
        if self._serving is not None:
            quality["skew"] = {"features": distribution_scores(stats, self._serving, self._skew_thresholds)}
        return verdict, quality
