"""Values that flow between ctpipe's transforms (small, picklable NamedTuples)."""
from __future__ import annotations

import functools
import pickle
from typing import Any, Iterable, NamedTuple, Optional


class SourceRecord(NamedTuple):
    """One raw input record and where it came from."""

    source: str
    """File path, or ``kafka://topic/partition``."""
    position: str
    """Line number in a file, row index in a Parquet file, or Kafka offset."""
    raw: Optional[bytes]
    """The bytes as read (a JSONL/CSV line, a Kafka value; None for a Kafka tombstone)."""
    fields: Optional[dict] = None
    """Already-parsed fields (CSV, Parquet); None when ``raw`` still has to be parsed."""
    ingest_time_ms: Optional[int] = None
    """When the record reached the source (Kafka timestamp), for timeliness metrics and the bound
    on event times in the future; None for files (and Kafka records without a timestamp)."""
    error: Optional[tuple] = None
    """(reason, detail) when the reader already found the record unusable (a CSV row with the
    wrong number of columns, a line over the size limit, non-UTF-8 text): decoding turns it into
    a DeadLetter as it stands."""
    text_values: bool = False
    """``fields`` hold untyped text (CSV): decoding types each value by the schema, or, before a
    schema exists, by its form (see ``transforms.decode.infer_text_type``)."""


class Event(NamedTuple):
    """A decoded event: typed feature values plus its identity and event time."""

    id: str
    event_time_ms: int
    features: dict
    source: str
    position: str
    ingest_time_ms: Optional[int] = None


class DeadLetter(NamedTuple):
    """A record that could not be used, with the reason and everything needed to replay it."""

    reason: str
    """Short code, also the metric label: bad_json, not_utf8, missing_id, type_mismatch, ..."""
    detail: str
    """Human-readable explanation naming the field and the problem."""
    raw: Optional[bytes]
    source: str
    position: str
    event_time_ms: Optional[int] = None
    """Set when the record's event time was readable, so the dead letter counts against its window."""

    def to_json(self) -> dict[str, Any]:
        raw = self.raw
        text = None
        if raw is not None:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        return {
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "position": self.position,
            "event_time_ms": self.event_time_ms,
            "raw_utf8": text,
            "raw_hex": None if raw is None or text is not None else raw.hex(),
        }


def pack_records(events: list, dead_letters: list = ()) -> bytes:
    """Events and DeadLetters as one byte string, for moving many records between stages.

    They are pickled as plain tuples: a NamedTuple pickles and unpickles through two Python
    calls per record (``__getnewargs__``, ``__new__``), plain tuples of str/int/float/bytes/dict
    values stay in pickle's C code, and ``unpack_records`` rebuilds the records with
    ``tuple.__new__``, also in C."""
    return pickle.dumps((list(map(tuple, events)), list(map(tuple, dead_letters))), pickle.HIGHEST_PROTOCOL)


def unpack_records(payloads: Iterable[bytes]) -> tuple[list, list]:
    """(Events, DeadLetters) of ``pack_records`` payloads, in payload order."""
    events, dead_letters = [], []
    as_event, as_dead = functools.partial(tuple.__new__, Event), functools.partial(tuple.__new__, DeadLetter)
    for payload in payloads:
        packed_events, packed_dead = pickle.loads(payload)
        events.extend(map(as_event, packed_events))
        dead_letters.extend(map(as_dead, packed_dead))
    return events, dead_letters
