"""Fixed event-time windows: an event's window id, and de-duplication within a window."""
from __future__ import annotations

import operator
from typing import Iterable

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
    ordered = _by_id_then_origin(events)
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


def _by_id_then_origin(events: Iterable[Event]) -> list[Event]:
    """``events`` sorted by (id, source, position). Ids are nearly always unique, so the sort is by
    id alone (a C-level key), and only a run of equal ids is ordered by origin: the same order as
    sorting by the whole key, without building it for every event."""
    ordered = sorted(events, key=_ID)
    at, n = 1, len(ordered)
    while at < n:
        if ordered[at].id != ordered[at - 1].id:
            at += 1
            continue
        start = at - 1
        while at < n and ordered[at].id == ordered[start].id:
            at += 1
        ordered[start:at] = sorted(ordered[start:at], key=lambda e: (e.source, _position_key(e.position)))
    return ordered


_ID = operator.itemgetter(0)
"""An Event's id (its first field)."""


def _position_key(position: str):
    return (0, int(position), "") if position.isdigit() else (1, 0, position)
