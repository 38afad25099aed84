"""Fixed event-time windows: ids, assignment, and per-window grouping with de-duplication."""
from __future__ import annotations

from typing import Iterable, Optional

import apache_beam as beam

from core.layout import window_id, window_start_ms
from core.records import DeadLetter, Event
from transforms.decode import preview


def window_of(event: Event, size_s: int) -> str:
    return window_id(window_start_ms(event.event_time_ms, size_s))


def split_duplicates(events: Iterable[Event]) -> tuple[list[Event], list[DeadLetter]]:
    """Events sorted by id, one per id (the first by source position); the rest as dead letters.

    Sorting makes every downstream file byte-identical across reruns, whatever order the runner
    delivered the events in.
    """
    ordered = sorted(events, key=lambda e: (e.id, e.source, _position_key(e.position)))
    kept: list[Event] = []
    dupes: list[DeadLetter] = []
    for event in ordered:
        if kept and kept[-1].id == event.id:
            first = kept[-1]
            dupes.append(DeadLetter("duplicate_id", f"id {preview(event.id)} already seen at {first.source}:{first.position}",
                                    None, event.source, event.position, event.event_time_ms))
        else:
            kept.append(event)
    return kept, dupes


def _position_key(position: str):
    return (0, int(position), "") if position.isdigit() else (1, 0, position)


class _AssignDoFn(beam.DoFn):
    def __init__(self, size_s: int, start_ms: Optional[int], end_ms: Optional[int]):
        self._size_s = size_s
        self._start_ms = start_ms
        self._end_ms = end_ms
        self._outside = beam.metrics.Metrics.counter("ctpipe", "outside_range")

    def process(self, event: Event):
        if (self._start_ms is not None and event.event_time_ms < self._start_ms) or (
                self._end_ms is not None and event.event_time_ms >= self._end_ms):
            self._outside.inc()
            yield beam.pvalue.TaggedOutput("outside", event)
            return
        yield window_of(event, self._size_s), event


class AssignWindow(beam.PTransform):
    """Events -> (window_id, Event) for events in [start_ms, end_ms); others to output ``outside``.

    Returns (keyed, outside). Events outside the requested range are not dead letters (they are
    valid, just not part of this run): they are counted and left to the run that covers them.
    """

    def __init__(self, size_s: int, start_ms: Optional[int] = None, end_ms: Optional[int] = None):
        super().__init__()
        self._fn = _AssignDoFn(size_s, start_ms, end_ms)

    def expand(self, events):
        out = events | "Assign" >> beam.ParDo(self._fn).with_outputs("outside", main="keyed")
        return out.keyed, out.outside
