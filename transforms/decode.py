"""Decode raw records into typed Events; anything unusable becomes a DeadLetter with its reason.

``decode_record`` is the pure function; ``Decode`` wraps it in a PTransform with two outputs,
``events`` and ``deadletter``. Nothing is dropped: every input record leaves through exactly one
of them.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Optional, Union

import apache_beam as beam

from core.records import DeadLetter, Event, SourceRecord
from transforms.routing import route

INT, FLOAT, BYTES = "INT", "FLOAT", "BYTES"


@dataclass(frozen=True)
class DecodeSpec:
    """What decoding needs to know: field roles and (once a schema exists) feature types."""

    event_time_field: str
    id_field: str
    event_time_format: str = "auto"
    feature_types: dict = field(default_factory=dict)
    """name -> INT | FLOAT | BYTES from the stored schema; empty before the first schema."""
    max_value_bytes: int = 1_000_000


def parse_event_time(value, fmt: str = "auto") -> int:
    """Milliseconds since the epoch (UTC) of an ISO-8601 string or epoch seconds/millis."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, str) and fmt in ("auto", "iso8601"):
        text = value.strip()
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            if fmt == "iso8601":
                raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is neither ISO-8601 nor epoch seconds/millis") from None
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            return int(round(parsed.timestamp() * 1000))
    if isinstance(value, str):
        value = float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a timestamp")
    if fmt == "epoch_ms" or (fmt == "auto" and abs(value) >= 1e11):
        return int(value)
    return int(round(value * 1000))


def infer_type(value) -> Optional[str]:
    if isinstance(value, list):
        types = {infer_type(v) for v in value if v is not None}
        return types.pop() if len(types) == 1 else (FLOAT if types == {INT, FLOAT} else None)
    if isinstance(value, bool) or isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return BYTES
    return None


def coerce_value(name: str, value, kind: str) -> Union[int, float, str, list]:
    """Value converted to the schema's type, or ValueError naming the feature and the problem."""
    if isinstance(value, list):
        return [coerce_value(name, v, kind) for v in value]
    if kind == FLOAT:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"feature {name!r}: expected FLOAT, got string {value[:40]!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"feature {name!r}: expected FLOAT, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"feature {name!r}: value {value} is not finite")
        return float(value)
    if kind == INT:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError(f"feature {name!r}: expected INT, got string {value[:40]!r}") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise ValueError(f"feature {name!r}: expected INT, got {type(value).__name__} {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"feature {name!r}: expected BYTES (a string), got {type(value).__name__} {value!r}")
    return value


def decode_record(record: SourceRecord, spec: DecodeSpec) -> Union[Event, DeadLetter]:
    """Decode one record. Pure: no I/O, same input gives the same output."""

    def dead(reason: str, detail: str) -> DeadLetter:
        return DeadLetter(reason, detail, record.raw, record.source, record.position)

    fields = record.fields
    if fields is None:
        if record.raw is None:
            return dead("tombstone", "null value (tombstone): no event to decode")
        if len(record.raw) > spec.max_value_bytes:
            return dead("oversize", f"value of {len(record.raw)} bytes exceeds the limit of {spec.max_value_bytes}")
        try:
            text = record.raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return dead("not_utf8", f"value is not UTF-8 ({exc.reason} at byte {exc.start})")
        try:
            fields = json.loads(text)
        except ValueError as exc:
            return dead("bad_json", f"not valid JSON: {exc}")
        if not isinstance(fields, dict):
            return dead("not_object", f"JSON value is a {type(fields).__name__}, expected an object")
    elif "__csv_error__" in fields:
        return dead("bad_row", fields["__csv_error__"])

    raw_id = fields.get(spec.id_field)
    if raw_id is None or raw_id == "" or isinstance(raw_id, (bool, dict, list, float)):
        return dead("missing_id", f"id field {spec.id_field!r} is missing or not a string/integer")
    if spec.event_time_field not in fields or fields[spec.event_time_field] is None:
        return dead("missing_event_time", f"event-time field {spec.event_time_field!r} is missing")
    try:
        event_time_ms = parse_event_time(fields[spec.event_time_field], spec.event_time_format)
    except (ValueError, OverflowError) as exc:
        return dead("bad_event_time", f"event-time field {spec.event_time_field!r}: {exc}")

    features = {}
    for name, value in fields.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        kind = spec.feature_types.get(name) or infer_type(value)
        try:
            if kind is None:
                raise ValueError(f"feature {name!r}: unsupported value {value!r}")
            features[name] = coerce_value(name, value, kind)
        except ValueError as exc:
            return DeadLetter("type_mismatch", str(exc), record.raw, record.source, record.position, event_time_ms)
    return Event(str(raw_id), event_time_ms, features, record.source, record.position, record.ingest_time_ms)


class Decode(beam.PTransform):
    """SourceRecords -> (events, deadletter)."""

    def __init__(self, spec: DecodeSpec):
        super().__init__()
        self._spec = spec

    def expand(self, records):
        return route(records, "DecodeRecords", decode_record, self._spec)
