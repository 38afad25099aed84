"""Pure validation pieces against real TFDV: drift scores match TFDV's, record checks, skew, config."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from core.errors import ConfigError
from core.records import DeadLetter, Event
from pipeline import metrics
from pipeline.config import config_from_dict
from transforms.record_checks import check_event, record_rules
from transforms.validation import (
    decide,
    distribution_scores,
    feature_thresholds,
    infer_schema,
    validate_skew,
    validate_window,
    window_statistics,
    with_drift_comparators,
    with_skew_comparators,
)


def _batch(n, seed, shift=0.0, colours=("red", "green", "blue"), weights=(1, 1, 1)):
    rng = random.Random(seed)
    return pa.RecordBatch.from_arrays([
        pa.array([[rng.gauss(10 + shift, 2)] for _ in range(n)], pa.large_list(pa.float32())),
        pa.array([[rng.choices(colours, weights)[0].encode()] for _ in range(n)], pa.large_list(pa.large_binary())),
        pa.array([[rng.randrange(2)] for _ in range(n)], pa.large_list(pa.int64())),
    ], ["x", "colour", "label"])


def test_own_drift_scores_equal_tfdv_measurements():
    a, b = window_statistics(_batch(500, 1), "a"), window_statistics(_batch(500, 2, shift=3.0, weights=(2, 1, 1)), "b")
    schema = infer_schema(a, "label", "id", "ts")
    thresholds = feature_thresholds(schema, 0.1, 0.15)
    anomalies = validate_window(b, with_drift_comparators(schema, 0.1, 0.15), a)
    tfdv_values = {i.path.step[0]: i.drift_measurements[0].value for i in anomalies.drift_skew_info}
    ours = distribution_scores(b, a, thresholds)
    assert {k: v["metric"] for k, v in ours.items()} == {"x": "js", "colour": "linf", "label": "js"}
    assert set(tfdv_values) == {"x", "colour", "label"}
    for feature, value in tfdv_values.items():
        assert ours[feature]["score"] == pytest.approx(value, abs=1e-5), feature
    assert ours["x"]["score"] > 0.1 and ours["colour"]["score"] > 0.1


def test_per_feature_threshold_and_count_bounds_decide_the_verdict():
    a, b = window_statistics(_batch(400, 1), "a"), window_statistics(_batch(100, 2, shift=3.0), "b")
    schema = infer_schema(a, "label", "id", "ts")
    strict = with_drift_comparators(schema, 0.1, 0.15, count_ratio=(0.5, 2.0))
    kinds = {(f, k) for f, k in [(r[0], r[1]) for r in __import__("transforms.validation").validation.anomaly_kinds(
        validate_window(b, strict, a))]}
    assert ("x", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH") in kinds
    assert ("<dataset>", "COMPARATOR_LOW_NUM_EXAMPLES") in kinds
    lax = with_drift_comparators(schema, 0.1, 0.15, overrides={"x": ("js", 0.9)}, count_ratio=(0.1, None))
    verdict = decide(validate_window(b, lax, a), ("COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",), 0, 100, 0.05)
    assert verdict.verdict == "PASS", verdict.reasons
    verdict = decide(validate_window(b, strict, a), ("COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",), 0, 100, 0.05)
    assert verdict.verdict == "QUARANTINED"
    verdict = decide(validate_window(b, strict, a), (), 6, 100, 0.05)
    assert verdict.verdict == "QUARANTINED" and "6 of 100 records dead-lettered" in verdict.reasons[-1]
    with pytest.raises(ValueError, match="validation.drift.colour: js does not apply"):
        feature_thresholds(schema, 0.1, 0.15, {"colour": ("js", 0.2)})


def test_skew_against_serving_statistics_ignores_the_label():
    train = window_statistics(_batch(500, 1), "train")
    serving_batch = _batch(500, 3, weights=(1, 1, 4))
    serving = window_statistics(pa.RecordBatch.from_arrays(serving_batch.columns[:2], ["x", "colour"]), "serving")
    schema = infer_schema(train, "label", "id", "ts")
    skew = validate_skew(train, with_skew_comparators(schema, 0.1, 0.15), serving)
    verdict = decide(validate_window(train, schema, None), ("SKEW_COMPARATOR_L_INFTY_HIGH",), 0, 500, 0.05, skew)
    assert verdict.verdict == "QUARANTINED"
    assert any(r.startswith("feature 'colour': SKEW_COMPARATOR_L_INFTY_HIGH") for r in verdict.reasons)
    assert not any("'label'" in r for r in verdict.reasons)


CURATED = text_format.Parse("""
feature { name: "humidity" type: FLOAT float_domain { min: 0 max: 100 }
          presence { min_fraction: 1.0 } shape { dim { size: 1 } } }
feature { name: "firmware" type: BYTES domain: "firmware" }
feature { name: "note" type: BYTES string_domain { value: "a" }
          distribution_constraints { min_domain_mass: 0.9 } }
feature { name: "count" type: INT int_domain { min: 1 } }
string_domain { name: "firmware" value: "v1" value: "v2" }
""", schema_pb2.Schema())


@pytest.mark.parametrize("features,reason,words", [
    ({"humidity": 50.0, "firmware": "v1", "count": 3, "note": "zzz"}, None, ""),
    ({"humidity": 150.0, "firmware": "v1"}, "range_violation", "'humidity': value 150.0 is above the schema maximum 100"),
    ({"humidity": 50.0, "firmware": "v9"}, "domain_violation", "'firmware': value 'v9' is not in the schema's domain"),
    ({"humidity": 50.0, "count": 0}, "range_violation", "'count': value 0 is below the schema minimum 1"),
    ({"humidity": "wet"}, "type_mismatch", "'humidity': expected FLOAT, got str"),
    ({"firmware": "v1"}, "missing_feature", "'humidity' is required"),
    ({"humidity": [50.0, 60.0]}, "shape_mismatch", "'humidity': 2 values, the schema's shape holds exactly 1"),
    ({"humidity": 50.0, "firmware": "v" * 10_000}, "domain_violation", "'firmware': value 'vvvv"),
])
def test_record_checks(features, reason, words):
    event = Event("e1", 1_000, features, "file.jsonl", "7")
    result = check_event(event, record_rules(CURATED))
    if reason is None:
        assert result is event
    else:
        assert isinstance(result, DeadLetter) and result.reason == reason and words in result.detail
        assert len(result.detail) < 300
        assert (result.source, result.position, result.event_time_ms) == ("file.jsonl", "7", 1_000)


def test_config_validation_names_the_bad_value():
    with pytest.raises(ConfigError, match="COMPARATOR_L_INFINITY_HIGH.*COMPARATOR_L_INFTY_HIGH"):
        config_from_dict({"validation": {"blocking_anomalies": ["COMPARATOR_L_INFINITY_HIGH"]}})
    with pytest.raises(ConfigError, match=r"validation.drift.temperature: expected \{js"):
        config_from_dict({"validation": {"drift": {"temperature": {"kl": 0.1}}}})
    with pytest.raises(ConfigError, match="min_count_ratio 3.0 is above"):
        config_from_dict({"validation": {"min_count_ratio": 3, "max_count_ratio": 2}})
    v = config_from_dict({"validation": {"drift": {"temperature": {"js": 0.3}}}}).validation
    assert v.drift_overrides == {"temperature": ("js", 0.3)}


def test_timeliness_and_metrics_export(tmp_path):
    from core import storage
    from pipeline.quality import export_quality_metrics
    from transforms.validate_windows import quality_of, timeliness_of

    stats = window_statistics(_batch(10, 1), "w")
    lags = [1.0] * 90 + [30.0] * 10
    q = quality_of(stats, 10, 2, {"duplicate_id": 1, "range_violation": 1}, timeliness_of(lags))
    assert q["timeliness"] == {"records": 100, "p50_s": 1.0, "p95_s": 30.0, "max_s": 30.0}
    assert q["validity"] == pytest.approx(11 / 12, abs=1e-6) and q["uniqueness"] == pytest.approx(11 / 12, abs=1e-6)
    q["drift"] = {"against": "20261127T0000Z", "features": {"x": {"metric": "js", "score": 0.25, "threshold": 0.1}}}
    storage.write_json_atomic(str(tmp_path / "windows" / "20261127T0100Z" / "v1" / "MANIFEST.json"), {
        "window_id": "20261127T0100Z", "version": 1, "quality": q, "validation": {"verdict": "PASS"}})
    assert export_quality_metrics(str(tmp_path)) == 1
    sample = metrics.REGISTRY.get_sample_value
    assert sample("ctpipe_drift_score", {"feature": "x"}) == 0.25
    assert sample("ctpipe_data_quality", {"window": "20261127T0100Z", "dimension": "timeliness_p95_s",
                                          "feature": ""}) == 30.0
    assert sample("ctpipe_data_quality", {"window": "20261127T0100Z", "dimension": "completeness",
                                          "feature": "x"}) == 1.0


def test_the_inferred_schema_does_not_depend_on_the_order_of_the_statistics():
    """Flink merges statistics in another order than DirectRunner: the schema must not follow it."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    stats = window_statistics(_batch(200, 1), "a")
    reordered = statistics_pb2.DatasetFeatureStatisticsList()
    reordered.CopyFrom(stats)
    features = [type(f).FromString(f.SerializeToString()) for f in reordered.datasets[0].features][::-1]
    del reordered.datasets[0].features[:]
    reordered.datasets[0].features.extend(features)
    names = [f.path.step[0] for f in stats.datasets[0].features]
    assert [f.path.step[0] for f in reordered.datasets[0].features] == names[::-1] != names
    one, other = infer_schema(stats, "label", "id", "ts"), infer_schema(reordered, "label", "id", "ts")
    assert one.SerializeToString(deterministic=True) == other.SerializeToString(deterministic=True)
    assert [f.name for f in one.feature] == sorted(names)
    assert [d.name for d in one.string_domain] == sorted(d.name for d in one.string_domain)
    assert list(one.string_domain[0].value) == sorted(one.string_domain[0].value)
