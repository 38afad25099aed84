"""Per-window TFDV statistics, schema inference, validation and the window verdict.

Pure functions over TFMD protos; the sealing composite (transforms/seal.py) maps them over
windows. A failed validation is an artifact (anomalies + verdict), never an exception: the window
writer stores it and training reads it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

PASS, WARN, QUARANTINED = "PASS", "WARN", "QUARANTINED"
TRAINING, SERVING = "TRAINING", "SERVING"
_TYPE_NAMES = {schema_pb2.INT: "INT", schema_pb2.FLOAT: "FLOAT", schema_pb2.BYTES: "BYTES"}


def stats_options(sketch_top_k: bool = False) -> tfdv.StatsOptions:
    """``sketch_top_k``: top values and unique counts from TFDV's sketches (estimates, one
    accumulator per feature) instead of one runner element per distinct value."""
    return tfdv.StatsOptions(num_top_values=20, num_rank_histogram_buckets=100,
                             experimental_use_sketch_based_topk_uniques=sketch_top_k)


def window_statistics(batch: pa.RecordBatch, name: str) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of one window's RecordBatch, the dataset named after the window."""
    stats = stats_impl.generate_statistics_in_memory(batch, stats_options())
    stats.datasets[0].name = name
    return stats


def infer_schema(stats: statistics_pb2.DatasetFeatureStatisticsList, label_field: str,
                 id_field: str, event_time_field: str) -> schema_pb2.Schema:
    """Schema from statistics, with TRAINING/SERVING environments (no label when serving).

    Free-text-like fields (the id, the event time) get no string domain: every value is new.
    Features, string domains and their values are sorted by name, so the schema (and the
    transform fingerprint and anomalies that follow from it) does not depend on the order in
    which a runner merged the statistics: Flink and DirectRunner infer the same bytes.
    """
    schema = tfdv.infer_schema(stats, infer_feature_shape=True, max_string_domain_size=100)
    _sort_by_name(schema)
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


def _sort_by_name(schema: schema_pb2.Schema) -> None:
    features = [schema_pb2.Feature.FromString(f.SerializeToString())
                for f in sorted(schema.feature, key=lambda f: f.name)]
    domains = [schema_pb2.StringDomain.FromString(d.SerializeToString())
               for d in sorted(schema.string_domain, key=lambda d: d.name)]
    for domain in domains:
        values = sorted(domain.value)
        del domain.value[:]
        domain.value.extend(values)
    del schema.feature[:]
    schema.feature.extend(features)
    del schema.string_domain[:]
    schema.string_domain.extend(domains)


def feature_types(schema: schema_pb2.Schema) -> dict[str, str]:
    return {f.name: _TYPE_NAMES[f.type] for f in schema.feature if f.type in _TYPE_NAMES}


JS, LINF = "js", "linf"


def is_numeric(feature: schema_pb2.Feature) -> bool:
    return feature.type == schema_pb2.FLOAT or (
        feature.type == schema_pb2.INT and not feature.int_domain.is_categorical)


def comparator_kind(feature: schema_pb2.Feature) -> Optional[str]:
    """``js`` for numeric features, ``linf`` for categorical ones (BYTES with a domain, or INT
    marked categorical), None for free-text features (ids, timestamps) that no distance fits."""
    if is_numeric(feature):
        return JS
    if (feature.type == schema_pb2.BYTES and (feature.HasField("domain") or feature.HasField("string_domain"))) or (
            feature.type == schema_pb2.INT and feature.int_domain.is_categorical):
        return LINF
    return None


def feature_thresholds(schema: schema_pb2.Schema, js_threshold: float, linf_threshold: float,
                       overrides: Mapping[str, tuple] = None, skip: Sequence[str] = ()) -> dict[str, tuple]:
    """feature -> (metric, threshold): the default per kind, or the per-feature override
    ``(metric, threshold)`` from config. A feature with no comparable distribution is left out."""
    overrides = dict(overrides or {})
    out = {}
    for feature in schema.feature:
        if feature.name in skip:
            continue
        kind = comparator_kind(feature)
        if feature.name in overrides:
            metric, threshold = overrides[feature.name]
            if kind is None and metric == LINF and feature.type == schema_pb2.BYTES:
                kind = LINF
            if metric != kind:
                raise ValueError(f"validation.drift.{feature.name}: {metric} does not apply to this "
                                 f"{'numeric' if kind == JS else 'categorical'} feature; use "
                                 f"{{{kind}: <threshold>}}")
            out[feature.name] = (metric, float(threshold))
        elif kind is not None:
            out[feature.name] = (kind, js_threshold if kind == JS else linf_threshold)
    return out


def with_drift_comparators(schema: schema_pb2.Schema, js_threshold: float, linf_threshold: float,
                           skip: Sequence[str] = (), overrides: Mapping[str, tuple] = None,
                           count_ratio: Optional[tuple] = None) -> schema_pb2.Schema:
    """A copy of ``schema`` with drift comparators on every feature that has none yet:
    Jensen-Shannon divergence for numeric features, L-infinity for categorical ones; per-feature
    ``overrides`` (feature -> (metric, threshold)) win over the defaults. ``count_ratio`` =
    (min, max) bounds this window's example count relative to the previous window's
    (TFDV's num_examples_drift_comparator: COMPARATOR_LOW/HIGH_NUM_EXAMPLES)."""
    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    thresholds = feature_thresholds(out, js_threshold, linf_threshold, overrides, skip)
    for feature in out.feature:
        if feature.name not in thresholds or feature.HasField("drift_comparator"):
            continue
        metric, threshold = thresholds[feature.name]
        if metric == JS:
            feature.drift_comparator.jensen_shannon_divergence.threshold = threshold
        else:
            feature.drift_comparator.infinity_norm.threshold = threshold
    if count_ratio is not None:
        low, high = count_ratio
        comparator = out.dataset_constraints.num_examples_drift_comparator
        if low is not None:
            comparator.min_fraction_threshold = low
        if high is not None:
            comparator.max_fraction_threshold = high
    return out


def with_skew_comparators(schema: schema_pb2.Schema, js_threshold: float, linf_threshold: float,
                          skip: Sequence[str] = ()) -> schema_pb2.Schema:
    """A copy of ``schema`` with only skew comparators (training window vs serving statistics)."""
    out = schema_pb2.Schema()
    out.CopyFrom(schema)
    thresholds = feature_thresholds(out, js_threshold, linf_threshold, None, skip)
    for feature in out.feature:
        feature.ClearField("drift_comparator")
        if feature.name not in thresholds or SERVING in feature.not_in_environment:
            continue
        metric, _ = thresholds[feature.name]
        if metric == JS:
            feature.skew_comparator.jensen_shannon_divergence.threshold = js_threshold
        else:
            feature.skew_comparator.infinity_norm.threshold = linf_threshold
    return out


# --------------------------------------------------------------------------- drift scores
# Computed here from the statistics themselves (not read back from TFDV's anomalies) so that every
# feature gets a number for every window pair, also below the threshold, for plots and metrics.
# They follow TFDV's definitions: JS over the standard histograms re-bucketed onto the union of
# both histograms' boundaries (mass spread uniformly inside a bucket), log base 2; L-infinity over
# the normalized value frequencies of the rank histograms.


def _feature_map(stats: statistics_pb2.DatasetFeatureStatisticsList) -> dict:
    if not stats.datasets:
        return {}
    return {(f.path.step[0] if f.path.step else f.name): f for f in stats.datasets[0].features}


def standard_histogram(feature_stats) -> list[tuple[float, float, float]]:
    """(low, high, count) buckets of a numeric feature's standard histogram ([] if none)."""
    if not feature_stats.HasField("num_stats"):
        return []
    for histogram in feature_stats.num_stats.histograms:
        if histogram.type == statistics_pb2.Histogram.STANDARD:
            return [(b.low_value, b.high_value, b.sample_count) for b in histogram.buckets]
    return []


def _rebucket(buckets, edges):
    out = [0.0] * (len(edges) - 1)
    for low, high, count in buckets:
        if count <= 0:
            continue
        if high <= low:  # a point mass: all of it in the bucket that holds the point
            for i in range(len(edges) - 1):
                if edges[i] <= low <= edges[i + 1]:
                    out[i] += count
                    break
            continue
        for i in range(len(edges) - 1):
            overlap = min(high, edges[i + 1]) - max(low, edges[i])
            if overlap > 0:
                out[i] += count * overlap / (high - low)
    return out


def js_divergence(a: Sequence[tuple], b: Sequence[tuple]) -> Optional[float]:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two histograms given as (low, high, count)."""
    if not a or not b:
        return None
    edges = sorted({x for low, high, _ in list(a) + list(b) for x in (low, high)})
    if len(edges) == 1:
        return 0.0
    p, q = _rebucket(a, edges), _rebucket(b, edges)
    sp, sq = sum(p), sum(q)
    if sp <= 0 or sq <= 0:
        return None
    total = 0.0
    for x, y in zip(p, q):
        x, y = x / sp, y / sq
        m = (x + y) / 2
        if x > 0:
            total += 0.5 * x * math.log2(x / m)
        if y > 0:
            total += 0.5 * y * math.log2(y / m)
    return max(0.0, min(1.0, total))


def value_frequencies(feature_stats) -> dict[str, float]:
    """value -> count of a categorical feature (rank histogram, else top values)."""
    if feature_stats.HasField("string_stats"):
        s = feature_stats.string_stats
        if s.rank_histogram.buckets:
            return {b.label: b.sample_count for b in s.rank_histogram.buckets}
        return {t.value: t.frequency for t in s.top_values}
    return {}


def linf_distance(a: Mapping[str, float], b: Mapping[str, float]) -> Optional[float]:
    """Largest difference of normalized frequencies over the union of values."""
    sa, sb = sum(a.values()), sum(b.values())
    if sa <= 0 or sb <= 0:
        return None
    return max(abs(a.get(k, 0.0) / sa - b.get(k, 0.0) / sb) for k in set(a) | set(b))


def distribution_scores(current, baseline, thresholds: Mapping[str, tuple]) -> dict[str, dict]:
    """feature -> {"metric", "score", "threshold"} of ``current`` against ``baseline``.

    ``score`` is None when one side has no values of the feature (a dropped feature is reported
    by the schema checks, not as a distance)."""
    now, before = _feature_map(current), _feature_map(baseline)
    out = {}
    for name, (metric, threshold) in sorted(thresholds.items()):
        if name not in now or name not in before:
            score = None
        elif metric == JS:
            score = js_divergence(standard_histogram(now[name]), standard_histogram(before[name]))
        else:
            score = linf_distance(value_frequencies(now[name]), value_frequencies(before[name]))
        out[name] = {"metric": metric, "score": None if score is None else round(score, 6),
                     "threshold": threshold}
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


SKEW_PREFIX = "SKEW_"
"""Anomaly kinds found by the training/serving skew check carry this prefix (TFDV reports skew
with the same AnomalyInfo types as drift), so the verdict rules can treat skew on its own."""


def anomaly_kind_names() -> set[str]:
    """Every kind name ``validation.blocking_anomalies`` may list."""
    from transforms.label_checks import LABEL_KINDS

    names = set(anomalies_pb2.AnomalyInfo.Type.keys())
    return names | {SKEW_PREFIX + n for n in names} | set(LABEL_KINDS)


def decide(anomalies: anomalies_pb2.Anomalies, blocking: Sequence[str], bad_records: int,
           total_records: int, max_bad_fraction: float,
           skew_anomalies: Optional[anomalies_pb2.Anomalies] = None, extra: Sequence[tuple] = ()) -> Verdict:
    """PASS when clean, QUARANTINED when a blocking anomaly kind or too many bad records, else WARN.

    ``skew_anomalies`` (from :func:`validate_skew`) add kinds named ``SKEW_<kind>``; ``extra``:
    (feature, kind, description) found by ctpipe's own checks (transforms/label_checks.py)."""
    kinds = anomaly_kinds(anomalies)
    if skew_anomalies is not None:
        kinds += [(f, SKEW_PREFIX + k, d) for f, k, d in anomaly_kinds(skew_anomalies)]
    kinds += list(extra)
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


def validate_skew(stats, skew_schema, serving_stats) -> anomalies_pb2.Anomalies:
    """Skew of a training window against serving statistics, with a schema from
    :func:`with_skew_comparators`; only the skew comparator anomalies are kept (schema anomalies
    of the window itself are reported once, by :func:`validate_window`)."""
    full = tfdv.validate_statistics(stats, skew_schema, environment=TRAINING, serving_statistics=serving_stats)
    out = anomalies_pb2.Anomalies()
    out.drift_skew_info.extend(full.drift_skew_info)
    for name, info in full.anomaly_info.items():
        reasons = [r for r in info.reason
                   if anomalies_pb2.AnomalyInfo.Type.Name(r.type).startswith("COMPARATOR_")]
        if reasons:
            out.anomaly_info[name].CopyFrom(info)
            del out.anomaly_info[name].reason[:]
            out.anomaly_info[name].reason.extend(reasons)
    return out
