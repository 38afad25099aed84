"""Validate every window of a run against the schema and against its predecessor (drift).

Windows are validated together (their statistics are small) so each can be compared with the
window before it: the previous window of the run, or for the first one the newest sealed window
before it in storage. The output per window is (Verdict, dead-letter count, quality dict).
"""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline import storage, window_store
from transforms.validation import decide, schema_from_text, validate_window, with_drift_comparators
from transforms.windowing import window_id, window_start_ms


@dataclass(frozen=True)
class ValidationSettings:
    schema_text: str
    window_size_s: int
    blocking: tuple
    max_bad_fraction: float
    js_threshold: float
    linf_threshold: float
    skip_drift: tuple

    @classmethod
    def from_config(cls, config, schema_text: str) -> "ValidationSettings":
        v = config.validation
        return cls(schema_text, config.window.size_s, tuple(v.blocking_anomalies), v.max_bad_fraction,
                   v.drift_js_threshold, v.drift_linf_threshold,
                   (config.id_field, config.event_time.field))


def load_window_stats(window: window_store.SealedWindow) -> statistics_pb2.DatasetFeatureStatisticsList:
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    stats.ParseFromString(storage.read_bytes(storage.join(window.path, window.manifest["validation"]["stats_file"])))
    return stats


def quality_of(stats, records: int, dead: int, dead_by_reason: dict) -> dict:
    """Data-quality numbers of a window (issue: completeness, validity, uniqueness)."""
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
    return {
        "records": records,
        "dead_letters": dead,
        "completeness": dict(sorted(completeness.items())),
        "validity": round(1 - invalid / total, 6) if total else 1.0,
        "uniqueness": round(1 - dupes / total, 6) if total else 1.0,
    }


def _validate_all(all_stats, root, settings: ValidationSettings, dead_counts, record_counts):
    schema = with_drift_comparators(schema_from_text(settings.schema_text), settings.js_threshold,
                                    settings.linf_threshold, settings.skip_drift)
    ordered = sorted(all_stats, key=lambda kv: kv[0])
    previous = None
    if ordered:
        stored = window_store.previous_sealed(root, ordered[0][0])
        previous = load_window_stats(stored) if stored is not None else None
    for wid, stats in ordered:
        anomalies = validate_window(stats, schema, previous)
        by_reason = dead_counts.get(wid, {})
        dead = sum(by_reason.values())
        records = record_counts.get(wid, 0)
        verdict = decide(anomalies, settings.blocking, dead, records + dead, settings.max_bad_fraction)
        yield wid, (verdict, dead, quality_of(stats, records, dead, by_reason))
        previous = stats


def _merge_reason_counts(pairs):
    out: dict[str, int] = {}
    for reason, n in pairs:
        out[reason] = out.get(reason, 0) + n
    return out


class ValidateWindows(beam.PTransform):
    """(window_id, stats) -> (window_id, (Verdict, dead letters in window, quality))."""

    def __init__(self, root: str, settings: ValidationSettings, dead_letters, record_counts):
        super().__init__()
        self._root = root
        self._settings = settings
        self._dead = dead_letters
        self._counts = record_counts

    def expand(self, stats):
        size = self._settings.window_size_s
        dead_counts = (self._dead
                       | "WithWindow" >> beam.Filter(lambda d: d.event_time_ms is not None)
                       | "KeyDead" >> beam.Map(lambda d: (window_id(window_start_ms(d.event_time_ms, size)),
                                                          (d.reason, 1)))
                       | "GroupDead" >> beam.GroupByKey()
                       | "CountDead" >> beam.MapTuple(lambda wid, pairs: (wid, _merge_reason_counts(pairs))))
        return (stats
                | "AllStats" >> beam.combiners.ToList()
                | "ValidateAll" >> beam.FlatMap(_validate_all, self._root, self._settings,
                                                beam.pvalue.AsDict(dead_counts), beam.pvalue.AsDict(self._counts)))
