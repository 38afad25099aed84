"""The first schema's statistics pass (transforms/schema_inference.py) works on columns; these
tests hold it to the rules written per event: a value's type and form counted one by one, and an
event left out of the statistics when any of its values does not fit the majority type or form."""
from collections import Counter

from core.records import Event
from transforms.arrow import events_to_record_batch
from transforms.decode import BYTES, FLOAT, INT, coerce_value, infer_type
from transforms.schema_inference import (
    LIST,
    SCALAR,
    conforming_batch,
    count_types,
    feature_columns,
    majority_types,
    scalar_features,
)


def _count_one_by_one(events):
    counts = {}
    for event in events:
        for name, value in event.features.items():
            kind = infer_type(value)
            if kind is not None:
                counts.setdefault(name, Counter())[kind] += 1
                counts[name][LIST if isinstance(value, list) else SCALAR] += 1
    return counts


def _conforming_one_by_one(events, counts):
    types, scalars = majority_types(counts), scalar_features(counts)
    kept = []
    for event in events:
        if any(isinstance(v, list) and len(v) != 1 for n, v in event.features.items() if n in scalars):
            continue
        try:
            kept.append(event._replace(features={n: coerce_value(n, v, types[n]) for n, v in event.features.items()
                                                 if n in types}))
        except ValueError:
            continue
    return kept


def _events():
    rows = []
    for i in range(60):
        features = {"temperature": 50.5 + i, "count": i, "name": f"n{i % 4}", "tags": ["a", "b"][: i % 3]}
        if i % 7 == 0:
            features["temperature"] = 51          # an INT in a FLOAT feature: coerced
        if i % 11 == 0:
            features["count"] = "hot"             # text in an INT feature: the event is left out
        if i % 13 == 0:
            features["count"] = "12"              # integer text: an INT
        if i % 17 == 0:
            features["temperature"] = [1.0, 2.0]  # a list in a scalar feature: left out
        if i % 19 == 0:
            features["temperature"] = [3.5]       # a one-value list: kept
        if i % 5 == 0:
            del features["name"]                  # absent
        if i % 23 == 0:
            features["rare"] = True               # only in some events
        features = {k: v for k, v in features.items() if v != []}
        rows.append(Event(f"id-{i}", 1_000 + i, features, "f", str(i)))
    return rows


def test_type_counts_from_columns_are_the_counts_value_by_value():
    events = _events()
    assert count_types(events) == _count_one_by_one(events)
    assert count_types([]) == {}


def test_the_conforming_batch_from_columns_is_the_batch_of_the_conforming_events():
    events = _events()
    counts = _count_one_by_one(events)
    assert majority_types(counts) == {"count": INT, "name": BYTES, "rare": INT, "tags": BYTES, "temperature": FLOAT}
    expected = events_to_record_batch(_conforming_one_by_one(events, counts), majority_types(counts))
    for chunk in (events, events[:1], events[11:12], []):
        want = events_to_record_batch(_conforming_one_by_one(chunk, counts), majority_types(counts))
        got = conforming_batch(feature_columns([e.features for e in chunk]), counts)
        assert got.equals(want) and got.schema.equals(want.schema)
    got = conforming_batch(feature_columns([e.features for e in events]), counts)
    assert got.num_rows == expected.num_rows < len(events)
    assert got.column("temperature").type.value_type.bit_width == 32 and got.equals(expected)


def test_sketched_free_text_features_infer_the_schema_of_exact_statistics(tmp_path):
    """The id and event time get TFDV's sketches, the rest exact statistics: the inferred schema is
    the one exact statistics of every feature give."""
    import apache_beam as beam
    import tensorflow_data_validation as tfdv
    from apache_beam.testing.test_pipeline import TestPipeline
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from transforms.schema_inference import FeatureColumnsOf, StatisticsOfColumns
    from transforms.validation import infer_schema, stats_options

    events = [e._replace(features={**e.features, "id": e.id, "ts": f"2026-11-27T00:{i % 60:02d}:00Z"})
              for i, e in enumerate(_events() * 3)]
    split, exact = str(tmp_path / "split.pb"), str(tmp_path / "exact.pb")
    with TestPipeline(runner="DirectRunner") as p:
        chunks = p | beam.Create(events) | FeatureColumnsOf(size=50)
        _ = chunks | "Split" >> StatisticsOfColumns(split, ("id", "ts"))
        counts = _count_one_by_one(events)
        _ = (p | "Whole" >> beam.Create([events_to_record_batch(_conforming_one_by_one(events, counts),
                                                                majority_types(counts))])
             | tfdv.GenerateStatistics(stats_options()) | tfdv.WriteStatisticsToBinaryFile(exact))

    def schema(path):
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        with open(path, "rb") as fh:
            stats.ParseFromString(fh.read())
        return infer_schema(stats, "label", "id", "ts")

    got, want = schema(split), schema(exact)
    assert {f.name for f in want.feature} >= {"id", "ts", "name", "temperature"}
    assert got == want


def test_spilled_feature_columns_give_the_statistics_of_held_ones(tmp_path):
    """``FeatureColumns(spill=...)`` chunks carry a file name instead of the pickled columns;
    StatisticsOfColumns reads them back and writes the same statistics."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from transforms.schema_inference import FeatureColumns, StatisticsOfColumns

    events = [e._replace(features={**e.features, "id": e.id}) for e in _events() * 3]

    def chunks(collector):
        collector.start("events.jsonl")
        out = [c for e in events for c in collector.add(e)]
        return out + collector.flush()

    held, spilled = chunks(FeatureColumns(size=40)), chunks(FeatureColumns(size=40, spill=str(tmp_path / "cols")))
    assert len(held) == len(spilled) > 1
    assert all(isinstance(c[0], str) and c[0].startswith(str(tmp_path / "cols")) for c in spilled)
    assert [c[1] for c in held] == [c[1] for c in spilled]
    outputs = {}
    for name, items in (("held", held), ("spilled", spilled)):
        outputs[name] = str(tmp_path / f"{name}.pb")
        with TestPipeline(runner="DirectRunner") as p:
            _ = p | beam.Create(items) | StatisticsOfColumns(outputs[name], ("id",))
    with open(outputs["held"], "rb") as a, open(outputs["spilled"], "rb") as b:
        assert a.read() == b.read()
