"""Statistics over all decoded events of a run, for inferring the first schema.

Types are decided by majority over all events (INT and FLOAT together make FLOAT), so a few bad
records ("temperature": "hot") cannot turn a numeric feature into a string one. So is the form: a
feature most records write as a scalar is a scalar feature, so a few records holding a list there
("temperature": [1, 2]) cannot take away its fixed shape (which a preprocessing_fn relies on).
Events that do not fit the majority types and forms are left out of the statistics (the main pass
dead-letters them: type_mismatch, shape_mismatch).
"""
from __future__ import annotations

from collections import Counter

import apache_beam as beam
import tensorflow_data_validation as tfdv

from core.records import pack_records, unpack_records
from transforms.arrow import events_to_record_batch
from transforms.decode import BYTES, FLOAT, INT, coerce_value, infer_type
from transforms.validation import stats_options

LIST, SCALAR = "list", "scalar"
"""Form counts, next to the type counts in each feature's Counter."""


def count_types(events) -> dict[str, Counter]:
    """feature -> Counter of its values' types (INT, FLOAT, BYTES) and forms (list, scalar)."""
    counts: dict[str, Counter] = {}
    for event in events:
        for name, value in event.features.items():
            kind = infer_type(value)
            if kind is not None:
                counter = counts.setdefault(name, Counter())
                counter[kind] += 1
                counter[LIST if isinstance(value, list) else SCALAR] += 1
    return counts


def merge_type_counts(count_dicts) -> dict[str, Counter]:
    merged: dict[str, Counter] = {}
    for counts in count_dicts:
        for name, counter in counts.items():
            merged.setdefault(name, Counter()).update(counter)
    return merged


def majority_types(counts: dict[str, Counter]) -> dict[str, str]:
    types = {}
    for name, counter in counts.items():
        numeric = counter[INT] + counter[FLOAT]
        if numeric >= counter[BYTES]:
            types[name] = FLOAT if counter[FLOAT] else INT
        else:
            types[name] = BYTES
    return types


def scalar_features(counts: dict[str, Counter]) -> frozenset:
    """Features most records write as a scalar."""
    return frozenset(name for name, counter in counts.items() if counter[SCALAR] > counter[LIST])


def _conforming(events, counts):
    types, scalars = majority_types(counts), scalar_features(counts)
    kept = []
    for event in events:
        if any(isinstance(v, list) and len(v) != 1 for n, v in event.features.items() if n in scalars):
            continue
        try:
            features = {n: coerce_value(n, v, types[n]) for n, v in event.features.items() if n in types}
        except ValueError:
            continue
        kept.append(event._replace(features=features))
    return kept


class StatisticsOfEvents(beam.PTransform):
    """Events -> TFDV statistics of all of them, written as a binary DatasetFeatureStatisticsList."""

    def __init__(self, output_path: str):
        super().__init__()
        self._path = output_path

    def expand(self, events):
        # The records are read twice (types first, then Arrow with the majority types), so they
        # are materialized between the two: packed (core.records), with their type counts beside.
        packed = events | "PackAndCount" >> beam.ParDo(_PackAndCountDoFn(10_000))
        counts = (packed
                  | "Counts" >> beam.Map(lambda pc: pc[1])
                  | "MergeTypes" >> beam.CombineGlobally(merge_type_counts))
        return (packed
                | "ToArrow" >> beam.Map(lambda pc, c: events_to_record_batch(
                    _conforming(unpack_records([pc[0]])[0], c), majority_types(c)), beam.pvalue.AsSingleton(counts))
                | "GenerateStatistics" >> tfdv.GenerateStatistics(stats_options())
                | "WriteStats" >> tfdv.WriteStatisticsToBinaryFile(self._path))


class _PackAndCountDoFn(beam.DoFn):
    """Events (in the global window) -> (pack_records bytes, count_types) per up to ``size`` events
    of a bundle: no PCollection holds lists of records (Beam would pickle them to sample sizes)."""

    def __init__(self, size: int):
        self._size = size

    def start_bundle(self):
        self._buffer = []

    def process(self, event):
        self._buffer.append(event)
        if len(self._buffer) >= self._size:
            yield self._flush()

    def finish_bundle(self):
        if self._buffer:
            yield beam.transforms.window.GlobalWindows.windowed_value(self._flush())

    def _flush(self):
        batch, self._buffer = self._buffer, []
        return pack_records(batch), count_types(batch)
