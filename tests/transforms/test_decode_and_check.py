"""DecodeAndCheck (one DoFn) leaves the same events, dead letters and counters as Decode then
CheckRecords (two), on records that break each kind of rule."""
import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from core.records import SourceRecord
from transforms.decode import FLOAT, INT, Decode, DecodeSpec
from transforms.record_checks import CheckRecords, DecodeAndCheck

SCHEMA = text_format.Parse("""
feature { name: "humidity" type: FLOAT float_domain { min: 0 max: 100 } }
feature { name: "count" type: INT int_domain { min: 1 } }
""", schema_pb2.Schema())
SPEC = DecodeSpec("ts", "id", feature_types={"humidity": FLOAT, "count": INT})
LINES = [
    b'{"id": "a", "ts": "2026-11-27T00:00:00Z", "humidity": 50.0, "count": 2}',   # valid
    b'{"id": "b", "ts": "2026-11-27T00:01:00Z", "humidity": 150.0}',               # range_violation
    b'{"id": "c", "ts": "2026-11-27T00:02:00Z", "count": 0}',                      # range_violation
    b'{"id": "d", "ts": "2026-11-27T00:03:00Z", "humidity": "wet"}',               # type_mismatch (decode)
    b'{"id": ',                                                                   # bad_json
    b'{"ts": "2026-11-27T00:04:00Z"}',                                             # missing_id
    b'{"id": "e", "ts": "2026-11-27T00:05:00Z", "humidity": 1.5}',                 # valid
]


EXPECTED_DEAD = [("bad_json", "5"), ("missing_id", "6"), ("range_violation", "2"), ("range_violation", "3"),
                 ("type_mismatch", "4")]


def _run(build):
    """Runs ``build`` over LINES, asserts its outputs, returns its ctpipe counters."""
    with TestPipeline(runner="DirectRunner") as p:
        records = p | beam.Create([SourceRecord("f.jsonl", str(i + 1), raw) for i, raw in enumerate(LINES)])
        events, dead = build(records)
        assert_that(events | "Ids" >> beam.Map(lambda e: (e.id, e.features.get("humidity"), e.features.get("count"))),
                    equal_to([("a", 50.0, 2), ("e", 1.5, None)]), label="Events")
        assert_that(dead | "Reasons" >> beam.Map(lambda d: (d.reason, d.position)), equal_to(EXPECTED_DEAD),
                    label="Dead")
    counters = {}
    for c in p.result.metrics().query(MetricsFilter().with_namespace("ctpipe"))["counters"]:
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + c.committed
    return counters


def _two_steps(records):
    events, decode_dead = records | Decode(SPEC)
    events, check_dead = events | CheckRecords(SCHEMA)
    return events, (decode_dead, check_dead) | beam.Flatten()


def test_one_dofn_routes_like_the_two_transforms():
    fused, separate = _run(lambda r: r | DecodeAndCheck(SPEC, SCHEMA)), _run(_two_steps)
    assert fused == separate == {"deadletter:bad_json": 1, "deadletter:missing_id": 1,
                                 "deadletter:range_violation": 2, "deadletter:type_mismatch": 1}
