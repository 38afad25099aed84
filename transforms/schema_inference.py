"""Statistics over all decoded events of a run, for inferring the first schema.

Types are decided by majority over all events (INT and FLOAT together make FLOAT), so a few bad
records ("temperature": "hot") cannot turn a numeric feature into a string one. So is the form: a
feature most records write as a scalar is a scalar feature, so a few records holding a list there
("temperature": [1, 2]) cannot take away its fixed shape (which a preprocessing_fn relies on).
Events that do not fit the majority types and forms are left out of the statistics (the main pass
dead-letters them: type_mismatch, shape_mismatch).
"""
from __future__ import annotations

import pickle
from collections import Counter
from typing import Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import tensorflow_data_validation as tfdv

from transforms.arrow import columns_to_record_batch
from transforms.decode import BYTES, FLOAT, INT, coerce_value, infer_type
from transforms.validation import stats_options
from transforms.window_parts import SpillFiles, unspill

LIST, SCALAR = "list", "scalar"
"""Form counts, next to the type counts in each feature's Counter."""


def count_types(events) -> dict[str, Counter]:
    """feature -> Counter of its values' types (INT, FLOAT, BYTES) and forms (list, scalar)."""
    return count_column_types(feature_columns([e.features for e in events]))


def feature_columns(features: list) -> dict[str, list]:
    """Feature dicts (one per event) as columns: name -> one value per event, None where absent."""
    names = set().union(*features) if features else set()
    return {name: [f.get(name) for f in features] for name in sorted(names)}


_SCALAR_KINDS = {bool: INT, int: INT, float: FLOAT, str: BYTES}


def count_column_types(columns: dict[str, list]) -> dict[str, Counter]:
    """``count_types`` of events given as columns: per column, the values' Python types are
    counted in C, and only values of other types (lists) are typed one by one."""
    counts: dict[str, Counter] = {}
    for name, values in columns.items():
        counter = Counter()
        for kind_of_value, n in Counter(map(type, values)).items():
            kind = _SCALAR_KINDS.get(kind_of_value)
            if kind is not None:
                counter[kind] += n
                counter[SCALAR] += n
            elif kind_of_value is not type(None):
                for value in values:
                    if type(value) is kind_of_value:
                        kind = infer_type(value)
                        if kind is not None:
                            counter[kind] += 1
                            counter[LIST if isinstance(value, list) else SCALAR] += 1
        if counter:
            counts[name] = counter
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


_PLAIN = {INT: int, FLOAT: float, BYTES: str}
"""The Python type a decoded value of each kind has, which coercion to that kind keeps as it is."""


def conforming_batch(columns: dict[str, list], counts: dict[str, Counter]):
    """The RecordBatch (``majority_types(counts)``) of the events given as columns
    (``feature_columns``) that conform: an event whose value does not coerce to its feature's
    majority type, or holds a list where most events hold a scalar, is left out. A column whose
    values all have their majority type's plain Python type is taken as it is (decoding made them
    that type and checked their range); the others are coerced value by value. The per-event
    rule this follows is written out in tests/transforms/test_schema_inference.py."""
    types, scalars = majority_types(counts), scalar_features(counts)
    rows = len(next(iter(columns.values()))) if columns else 0
    dropped = set()
    coerced = {}
    for name, values in columns.items():
        kind = types.get(name)
        if kind is None:
            continue
        if set(map(type, values)) <= {_PLAIN[kind], type(None)}:
            coerced[name] = values
            continue
        out = []
        for row, value in enumerate(values):
            if value is not None:
                if isinstance(value, list) and name in scalars and len(value) != 1:
                    dropped.add(row)
                else:
                    try:
                        value = coerce_value(name, value, kind)
                    except ValueError:
                        dropped.add(row)
            out.append(value)
        coerced[name] = out
    if dropped:
        keep = [row for row in range(rows) if row not in dropped]
        coerced = {name: [values[row] for row in keep] for name, values in coerced.items()}
        rows = len(keep)
    return columns_to_record_batch(coerced, types, rows)


class FeatureColumns:
    """A collector for ``transforms.ingest.IngestFiles``: events -> (pickled ``feature_columns``,
    their ``count_column_types``) per up to ``size`` events; the first schema's statistics need
    nothing else of an event.

    ``spill`` (a storage URI private to the run): the pickled columns go to a file there and the
    chunk carries its URI instead. ``StatisticsOfColumns`` reads the chunks twice, so the runner
    materializes them between the two reads: spilled, that is names and type counts, not the
    input (5M rows held whole took 2.7 GB). Names depend only on the input file and the chunk's
    place in it (retries rewrite the same files)."""

    def __init__(self, size: int = 10_000, spill: Optional[str] = None):
        self._size = size
        self._spill = None if spill is None else SpillFiles(spill, "columns")

    def start(self, path: str = ""):
        """Empty, for a new file (``path``: its name, for the spill files' names)."""
        self._buffer: list = []
        if self._spill is not None:
            self._spill.start(path)

    def add(self, event):
        self._buffer.append(event.features)
        return self.flush() if len(self._buffer) >= self._size else ()

    def flush(self):
        if not self._buffer:
            return []
        columns = feature_columns(self._buffer)
        self._buffer = []
        data = pickle.dumps(columns, pickle.HIGHEST_PROTOCOL)
        return [(data if self._spill is None else self._spill.put(data), count_column_types(columns))]


class StatisticsOfColumns(beam.PTransform):
    """Chunks of events as (pickled ``feature_columns``, ``count_column_types``) -> TFDV statistics
    of all of them, written as a binary DatasetFeatureStatisticsList. The chunks come from
    ``FeatureColumnsOf``, or ``FeatureColumns`` in ``transforms.ingest.IngestFiles``.

    ``free_text``: features whose every value is new (the id, the event time), which get no
    string domain (``transforms.validation.infer_schema``). TFDV's exact top-k and unique counts
    move one element per distinct value through the runner (for a unique id, one per record: most
    of this pass's time), so their statistics are computed on their own with TFDV's sketches,
    which give the same counts, presence and shapes and an estimated number of unique values that
    no schema rule reads for them; the other features' statistics are TFDV's exact ones."""

    def __init__(self, output_path: str, free_text: Sequence[str] = ()):
        super().__init__()
        self._path = output_path
        self._free = tuple(free_text)

    def expand(self, chunks):
        free = self._free
        # The features are read twice (types first, then Arrow with the majority types): the
        # chunks are materialized between the two, with their type counts beside.
        counts = (chunks
                  | "Counts" >> beam.Map(lambda chunk: chunk[1])
                  | "MergeTypes" >> beam.CombineGlobally(merge_type_counts))
        batches = chunks | "ToArrow" >> beam.Map(lambda chunk, c: conforming_batch(pickle.loads(unspill(chunk[0])), c),
                                                 beam.pvalue.AsSingleton(counts))
        exact = (batches
                 | "OtherFeatures" >> beam.Map(_columns, free, False)
                 | "GenerateStatistics" >> tfdv.GenerateStatistics(stats_options()))
        sketched = (batches
                    | "FreeTextFeatures" >> beam.Map(_columns, free, True)
                    | "SketchStatistics" >> tfdv.GenerateStatistics(stats_options(sketch_top_k=True)))
        return (exact
                | "Merge" >> beam.Map(_merge_features, beam.pvalue.AsSingleton(sketched))
                | "WriteStats" >> tfdv.WriteStatisticsToBinaryFile(self._path))


def _columns(batch, names_of: tuple, inside: bool):
    """The columns of ``batch`` named in ``names_of`` (``inside``) or not named there, as a RecordBatch."""
    names = [n for n in batch.schema.names if (n in names_of) == inside]
    return pa.RecordBatch.from_arrays([batch.column(n) for n in names], names)


def _merge_features(exact, sketched):
    """One DatasetFeatureStatisticsList with the features of both (same rows): ``exact``'s
    dataset plus the features of ``sketched``'s."""
    merged = type(exact)()
    merged.CopyFrom(exact)
    if sketched.datasets and merged.datasets:
        merged.datasets[0].features.extend(sketched.datasets[0].features)
    return merged


class FeatureColumnsOf(beam.PTransform):
    """Events (in the global window) -> the chunks ``StatisticsOfColumns`` reads, per up to
    ``size`` events of a bundle: no PCollection holds lists of records (Beam would pickle them to
    sample sizes), and nothing but the features is kept."""

    def __init__(self, size: int = 10_000):
        super().__init__()
        self._size = size

    def expand(self, events):
        return events | "ColumnsAndCount" >> beam.ParDo(_ColumnsDoFn(self._size))


class _ColumnsDoFn(beam.DoFn):
    def __init__(self, size: int):
        self._size = size

    def start_bundle(self):
        self._collector = FeatureColumns(self._size)
        self._collector.start()

    def process(self, event):
        yield from self._collector.add(event)

    def finish_bundle(self):
        for chunk in self._collector.flush():
            yield beam.transforms.window.GlobalWindows.windowed_value(chunk)
