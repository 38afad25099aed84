"""Events -> RecordBatch (transforms/arrow.py): the column path Arrow builds in C gives the same
batch as building every value's list in Python, whatever the values."""
import random

import pyarrow as pa

from core.records import Event
from transforms import arrow

TYPES = {"i": "INT", "f": "FLOAT", "s": "BYTES", "l": "FLOAT", "m": "BYTES"}


def _per_value(events, types):
    names = sorted(types)
    return pa.RecordBatch.from_arrays(
        [pa.array([arrow._as_list(e.features[n], types[n]) if n in e.features else None for e in events],
                  type=arrow._ARROW_TYPES[types[n]]) for n in names], names)


def _random_events(rng):
    events = []
    for k in range(rng.randint(0, 30)):
        f = {}
        if rng.random() < .8:
            f["i"] = rng.choice([rng.randint(-2 ** 63, 2 ** 63 - 1), 0, 5])
        if rng.random() < .8:
            f["f"] = rng.choice([rng.uniform(-1e30, 1e30), 0.1, -0.0, 1e-46])
        if rng.random() < .8:
            f["s"] = rng.choice(["a", "ü", "", "x" * 50, b"\xff"])
        if rng.random() < .5:
            f["l"] = rng.choice([[1.5, 2.5], [0.5], 3.5])     # lists: the per-value path
        if rng.random() < .5:
            f["m"] = rng.choice([7, "t", ["a", "b"]])        # an int in a BYTES column: likewise
        events.append(Event(str(k), 0, f, "src", str(k)))
    return events


def test_both_paths_give_the_same_batch():
    rng = random.Random(7)
    for _ in range(300):
        events = _random_events(rng)
        fast, slow = arrow.events_to_record_batch(events, TYPES), _per_value(events, TYPES)
        assert fast.schema.equals(slow.schema) and fast.equals(slow), events


def test_absent_values_are_null_lists_and_present_ones_one_value_lists():
    events = [Event("a", 0, {"f": 1.5}, "s", "1"), Event("b", 0, {}, "s", "2")]
    column = arrow.events_to_record_batch(events, {"f": "FLOAT"}).column(0)
    assert column.to_pylist() == [[1.5], None] and column.null_count == 1
