"""Per-window TFDV statistics, schema inference, validation and the window verdict.

Pure functions over TFMD protos; the Beam wiring (``ComputeWindowStats``) only maps them over
windows. A failed validation is an artifact (anomalies + verdict), never an exception: the window
writer stores it and training reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

PASS, WARN, QUARANTINED = "PASS", "WARN", "QUARANTINED"
TRAINING, SERVING = "TRAINING", "SERVING"
_TYPE_NAMES = {schema_pb2.INT: "INT", schema_pb2.FLOAT: "FLOAT", schema_pb2.BYTES: "BYTES"}


def stats_options() -> tfdv.StatsOptions:
    return tfdv.StatsOptions(num_top_values=20, num_rank_histogram_buckets=100)


def window_statistics(batch: pa.RecordBatch, name: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of one window's RecordBatch, the dataset named after the window."""
    stats = stats_impl.generate_statistics_in_memory(batch, stats_options())
    stats.datasets[0].name = name
    return stats


def infer_schema(stats: statistics_pb2.DatasetFeatureStatisticsList, label_field: str,
                 id_field: str, event_time_field: str) -> schema_pb2.Schema:
    """Schema from statistics, with TRAINING/SERVING environments (no label when serving).

    Free-text-like fields (the id, the event time) get no string domain: every value is new.
    """
    schema = tfdv.infer_schema(stats, infer_feature_shape=True, max_string_domain_size=100)
    schema.default_environment.extend([TRAINING, SERVING])
    for feature in schema.feature:
        if feature.name in (id_field, event_time_field) and feature.HasField("domain"):
            domain = feature.domain
            feature.ClearField("domain")
            keep = [d for d in schema.string_domain if d.name != domain]
            del schema.string_domain[:]
            schema.string_domain.extend(keep)
        if feature.name == label_field:
            feature.not_in_environment.append(SERVING)
    return schema


def feature_types(schema: schema_pb2.Schema) -> dict[str, str]:
    return {f.name: _TYPE_NAMES[f.type] for f in schema.feature if f.type in _TYPE_NAMES}


def schema_to_text(schema: schema_pb2.Schema) -> str:
    return text_format.MessageToString(schema)


def schema_from_text(text: str) -> schema_pb2.Schema:
    return text_format.Parse(text, schema_pb2.Schema())


def with_drift_comparators(schema: schema_pb2.Schema, js_threshold: float, linf_threshold: float,
                           skip: Sequence[str] = ()) -> schema_pb2.Schema:
    """A copy of ``schema`` with drift comparators on every feature that has none yet:
    Jensen-Shannon divergence for numeric features, L-infinity for categorical ones."""
    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    for feature in out.feature:
        if feature.name in skip or feature.HasField("drift_comparator"):
            continue
        numeric = feature.type == schema_pb2.FLOAT or (
            feature.type == schema_pb2.INT and not feature.int_domain.is_categorical)
        if numeric:
            feature.drift_comparator.jensen_shannon_divergence.threshold = js_threshold
        elif feature.type == schema_pb2.BYTES and feature.HasField("domain"):
            feature.drift_comparator.infinity_norm.threshold = linf_threshold
    return out


@dataclass(frozen=True)
class Verdict:
    verdict: str
    anomalies: anomalies_pb2.Anomalies
    reasons: tuple
    """Human-readable reasons: "feature 'x': <anomaly kind> (<description>)"."""


def anomaly_kinds(anomalies: anomalies_pb2.Anomalies) -> list[tuple[str, str, str]]:
    """(feature, kind name, description) of every anomaly, sorted."""
    out = []
    for feature, info in anomalies.anomaly_info.items():
        for reason in info.reason:
            out.append((feature, anomalies_pb2.AnomalyInfo.Type.Name(reason.type), reason.description))
    for reason in anomalies.dataset_anomaly_info.reason:
        out.append(("<dataset>", anomalies_pb2.AnomalyInfo.Type.Name(reason.type), reason.description))
    return sorted(out)


def decide(anomalies: anomalies_pb2.Anomalies, blocking: Sequence[str], bad_records: int,
           total_records: int, max_bad_fraction: float) -> Verdict:
    """PASS when clean, QUARANTINED when a blocking anomaly kind or too many bad records, else WARN."""
    kinds = anomaly_kinds(anomalies)
    reasons = [f"feature {f!r}: {k} ({d})" for f, k, d in kinds]
    blocked = any(k in blocking for _f, k, _d in kinds)
    fraction = bad_records / total_records if total_records else 0.0
    if fraction > max_bad_fraction:
        blocked = True
        reasons.append(f"{bad_records} of {total_records} records dead-lettered "
                       f"({fraction:.1%} > max_bad_fraction {max_bad_fraction:.1%})")
    verdict = QUARANTINED if blocked else (WARN if reasons else PASS)
    return Verdict(verdict, anomalies, tuple(reasons))


def validate_window(stats, schema, previous_stats: Optional[statistics_pb2.DatasetFeatureStatisticsList],
                    environment: str = TRAINING, serving_stats=None) -> anomalies_pb2.Anomalies:
    return tfdv.validate_statistics(stats, schema, environment=environment,
                                    previous_statistics=previous_stats, serving_statistics=serving_stats)


class _StatsDoFn(beam.DoFn):
    def process(self, element):
        wid, batch = element
        yield wid, window_statistics(batch, wid)


class ComputeWindowStats(beam.PTransform):
    """(window_id, RecordBatch) -> (window_id, DatasetFeatureStatisticsList)."""

    def expand(self, batches):
        return batches | "WindowStats" >> beam.ParDo(_StatsDoFn())
