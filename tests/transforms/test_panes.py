"""WindowPanes (transforms/panes.py) under TestStream on the streaming DirectRunner: which pane
each record lands in, and which records come out as too late, as the watermark moves."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from core.layout import window_id
from transforms.panes import TOO_LATE, WindowPanes, close_time_ms

SIZE_S = 60
LATENESS_S = 120
W0 = window_id(0)          # [0 s, 60 s)
W1 = window_id(60_000)     # [60 s, 120 s)


def _at(wid: str, name: str, seconds: float) -> TimestampedValue:
    return TimestampedValue((wid, name), seconds)


def _run(stream, lateness_s: int = LATENESS_S, reseal_too_late: bool = False):
    with BeamTestPipeline(options=PipelineOptions(["--streaming"])) as p:
        out = (p | stream | beam.Map(lambda kv: kv).with_output_types(beam.typehints.KV[str, beam.typehints.Any])
               | WindowPanes(SIZE_S, lateness_s, reseal_too_late))
        panes = out.panes | "Panes" >> beam.Map(lambda pane: (pane[0], tuple(sorted(pane[1])), pane[2]))
        late = out[TOO_LATE]
        yield panes, late


def test_close_time_is_the_last_instant_of_the_lateness():
    assert close_time_ms(W1, SIZE_S, 0) == 119_999
    assert close_time_ms(W1, SIZE_S, LATENESS_S) == 239_999


def test_on_time_late_and_too_late_records():
    stream = (TestStream()
              .add_elements([_at(W0, "a", 1), _at(W0, "b", 2), _at(W1, "c", 61)])
              .advance_watermark_to(60)                       # W0's end: on time
              .add_elements([_at(W0, "d", 5), _at(W0, "d2", 8)])   # within the lateness: one LATE pane
              .advance_watermark_to(Timestamp(micros=179_998_000))  # at the next advance, 1 ms before W0 closes
              .add_elements([_at(W0, "e", 6)])                # still within it
              .advance_watermark_to(Timestamp(micros=179_999_000))  # W0 closed (end - 1 ms + 120 s)
              .add_elements([_at(W0, "f", 7), _at(W1, "g", 62)])  # f too late, g late for W1
              .advance_watermark_to(200)  # the DirectRunner fires no timer on the jump to +infinity
              .advance_watermark_to_infinity())
    for panes, late in _run(stream):
        assert_that(panes, equal_to([
            (W0, ("a", "b"), "ON_TIME"),
            (W1, ("c",), "ON_TIME"),
            (W0, ("a", "b", "d", "d2"), "LATE"),
            (W0, ("a", "b", "d", "d2", "e"), "LATE"),
            (W1, ("c", "g"), "LATE"),
        ]), label="CheckPanes")
        assert_that(late, equal_to([(W0, "f")]), label="CheckTooLate")


def test_zero_lateness_closes_a_window_when_it_fires():
    stream = (TestStream()
              .add_elements([_at(W0, "a", 1)])
              .advance_watermark_to(60)
              .add_elements([_at(W0, "b", 2), _at(W1, "c", 70)])
              .advance_watermark_to(120)  # the DirectRunner fires no timer on the jump to +infinity
              .advance_watermark_to_infinity())
    for panes, late in _run(stream, lateness_s=0):
        assert_that(panes, equal_to([(W0, ("a",), "ON_TIME"), (W1, ("c",), "ON_TIME")]), label="CheckPanes")
        assert_that(late, equal_to([(W0, "b")]), label="CheckTooLate")


def test_a_window_first_seen_after_it_closed_is_fired_not_dropped():
    """The one case the DoFn cannot classify (transforms/panes.py): the window's first record
    arrives after its close time; its timer is in the past and fires at the next advance."""
    stream = (TestStream()
              .advance_watermark_to(1000)
              .add_elements([_at(W0, "old", 3)])
              .advance_watermark_to(1001)
              .add_elements([_at(W0, "older", 4)])
              .advance_watermark_to_infinity())
    for panes, late in _run(stream):
        assert_that(panes, equal_to([(W0, ("old",), "ON_TIME")]), label="CheckPanes")
        assert_that(late, equal_to([(W0, "older")]), label="CheckTooLate")


def test_too_late_records_as_panes_of_their_own():
    """new_version: the too-late records of one watermark advance make one pane (sealing merges
    it with the window's sealed version), never a pane with the window's earlier records."""
    stream = (TestStream()
              .add_elements([_at(W0, "a", 1)])
              .advance_watermark_to(60)
              .advance_watermark_to(180)                      # W0 closed
              .add_elements([_at(W0, "x", 2), _at(W0, "y", 3)])
              .advance_watermark_to(181)
              .add_elements([_at(W0, "z", 4)])
              .advance_watermark_to(182)
              .advance_watermark_to_infinity())
    for panes, late in _run(stream, reseal_too_late=True):
        assert_that(panes, equal_to([(W0, ("a",), "ON_TIME"), (W0, ("x", "y"), "LATE"), (W0, ("z",), "LATE")]),
                    label="CheckPanes")
        assert_that(late, equal_to([]), label="CheckTooLate")
