"""Decode raw records into typed Events; anything unusable becomes a DeadLetter with its reason.

``decode_record`` is the pure function; ``Decode`` wraps it in a PTransform with two outputs,
``events`` and ``deadletter``. Nothing is dropped: every input record leaves through exactly one
of them, and no record can make decoding raise.

The rules, with the dead-letter reason each broken rule gives (the detail names the field and
the problem):

Record (a JSON value: a JSONL line or a Kafka value; CSV and Parquet rows arrive parsed)
    ``tombstone`` a Kafka null value; ``oversize`` more than ``max_value_bytes``;
    ``not_utf8`` not UTF-8; ``bad_json`` not JSON, or nested too deep to parse;
    ``not_object`` not a JSON object; ``duplicate_key`` an object holds a key twice (parsers
    disagree on which value wins). A leading UTF-8 byte-order mark is ignored. Problems a reader
    found (a CSV row with the wrong number of columns...) keep the reader's reason.
Id (``id_field``)
    ``missing_id`` absent, null or empty; ``bad_id`` not a string or an integer, or a string
    that is not valid Unicode. Ids are opaque: no path is ever built from one, so ``/`` or
    ``..`` in an id are plain characters.
Event time (``event_time_field``)
    ``missing_event_time``; ``bad_event_time`` not ISO-8601 or epoch seconds/millis (see
    ``parse_event_time``); ``event_time_out_of_range`` before 1970-01-01 or after
    9999-12-31 UTC (epoch micro- and nanoseconds land here); ``event_time_in_future`` more than
    ``max_future_ms`` ahead of the record's ingest time (its Kafka timestamp) or of ``now_ms``
    (when the stream cycle was planned), whichever is earlier. Files carry no ingest time, so
    for them only the range applies: backfills of old data are normal. Dead letters of the last
    two rules carry no event time (they belong to no window and never move the watermark).
Features (every field, the id and event time included)
    A value is a scalar or a flat list of scalars; null and ``[]`` are absent. Types come from
    the stored schema, or before the first schema from the value (JSON/Parquet) or from its
    text (CSV: ``infer_text_type``). ``type_mismatch`` a value that does not fit its type
    (nested lists, objects, lists holding null, NaN and infinities, booleans where FLOAT or BYTES
    is expected);
    ``value_out_of_range`` an INT outside int64, a FLOAT beyond float32's range (features are
    stored as float32, so smaller magnitudes round and those below ~1.4e-45 become 0);
    ``not_utf8`` a string (or a key) that is not valid Unicode (an unpaired surrogate from a
    ``\\ud800`` escape). Booleans in an INT feature are 1 and 0; integral floats (``2.0``) and
    integer text (``"7"``) are INTs; numeric text is a FLOAT.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
import reprlib
from dataclasses import dataclass, field
from typing import Optional, Union

import apache_beam as beam
import orjson

from core.records import DeadLetter, Event, SourceRecord
from transforms.routing import route

INT, FLOAT, BYTES = "INT", "FLOAT", "BYTES"
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
FLOAT32_MAX = 3.4028234663852886e38
MIN_EVENT_TIME_MS = 0
"""1970-01-01T00:00:00Z: the earliest event time ctpipe accepts."""
MAX_EVENT_TIME_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the latest event time ctpipe accepts (window ids have 4-digit years)."""
DEFAULT_MAX_FUTURE_MS = 86_400_000
"""Default ``event_time.max_future``: one day ahead of the ingest time."""

_UTF8_BOM = b"\xef\xbb\xbf"
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_LEADING_ZERO = re.compile(r"[+-]?0[0-9]")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TWO_63 = 2.0 ** 63
_LOOSE_KEY = re.compile(r'"[ \t\n\r]')
_LOOSE_KEY_BYTES = re.compile(rb'"[ \t\n\r]')
"""A quote followed by whitespace: a key may be followed by whitespace before its colon."""

_PREVIEW = reprlib.Repr()
_PREVIEW.maxstring = _PREVIEW.maxother = 60
_PREVIEW.maxlong = 40
_PREVIEW.maxlevel = 2
_PREVIEW.maxlist = _PREVIEW.maxdict = 4


def preview(value) -> str:
    """A short repr of ``value`` for error details (bounded length and depth)."""
    return _PREVIEW.repr(value)


class RecordError(ValueError):
    """A record breaks a decoding rule; ``reason`` is the dead-letter code, the message its detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class DecodeSpec:
    """What decoding needs to know: field roles and (once a schema exists) feature types."""

    event_time_field: str
    id_field: str
    event_time_format: str = "auto"
    feature_types: dict = field(default_factory=dict)
    """name -> INT | FLOAT | BYTES from the stored schema; empty before the first schema."""
    max_value_bytes: int = 1_000_000
    max_future_ms: Optional[int] = DEFAULT_MAX_FUTURE_MS
    """Event times more than this far ahead of the ingest time are dead letters; None: no bound."""
    now_ms: Optional[int] = None
    """A second reference for ``max_future_ms``: when the stream cycle was planned (kept in the
    cycle plan, so a replay decodes the same way); None for files."""


# --------------------------------------------------------------------------- event time


def parse_event_time(value, fmt: str = "auto") -> int:
    """Milliseconds since the epoch (UTC) of an ISO-8601 string or epoch seconds/millis.

    ``auto``: strings are ISO-8601 (naive ones are UTC) or numeric text; numbers of magnitude
    1e11 or more are milliseconds, smaller ones seconds."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, str) and fmt in ("auto", "iso8601"):
        text = value.strip()
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            if fmt == "iso8601":
                raise ValueError(f"{preview(value)} is not an ISO-8601 timestamp") from None
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{preview(value)} is neither ISO-8601 nor epoch seconds/millis") from None
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            return int(round(parsed.timestamp() * 1000))
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{preview(value)} is not an epoch number") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{preview(value)} is not a timestamp")
    if fmt == "epoch_ms" or (fmt == "auto" and abs(value) >= 1e11):
        return int(value)
    return int(round(value * 1000))


def format_event_time(ms: int) -> str:
    """ISO-8601 UTC of ``ms`` where a datetime can hold it, else the raw milliseconds."""
    try:
        return (dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ms)).isoformat()
    except OverflowError:
        return f"{ms} ms since the epoch"


_EPOCH_UNITS = {"auto": "seconds below 1e11, milliseconds above", "epoch_s": "seconds", "epoch_ms": "milliseconds",
                "iso8601": "seconds"}


def check_event_time(name: str, raw, ms: int, references: tuple, max_future_ms: Optional[int],
                     fmt: str = "auto") -> None:
    """RecordError unless ``ms`` is in [1970, 9999] and at most ``max_future_ms`` past the
    earliest of ``references`` (ingest times; None entries are ignored). ``fmt`` (the
    event_time.format) only shapes the hint for numbers far past 9999."""
    if not MIN_EVENT_TIME_MS <= ms <= MAX_EVENT_TIME_MS:
        hint = ""
        if ms > MAX_EVENT_TIME_MS and (not isinstance(raw, str) or _FLOAT_TEXT.fullmatch(raw.strip())):
            hint = (f"; with event_time.format {fmt} numbers are epoch {_EPOCH_UNITS.get(fmt, fmt)}: epoch micro- "
                    "and nanoseconds are not read")
        raise RecordError("event_time_out_of_range",
                          f"event-time field {name!r}: {preview(raw)} is {format_event_time(ms)}, outside "
                          f"1970-01-01T00:00:00Z..9999-12-31T23:59:59.999Z{hint}")
    known = [r for r in references if r is not None]
    if max_future_ms is None or not known:
        return
    reference = min(known)
    if ms > reference + max_future_ms:
        raise RecordError("event_time_in_future",
                          f"event-time field {name!r}: {format_event_time(ms)} is more than "
                          f"{max_future_ms / 3_600_000:g} h after the record's ingest time "
                          f"{format_event_time(reference)} (event_time.max_future)")


def _event_time(fields: dict, spec: DecodeSpec, ingest_time_ms: Optional[int]) -> int:
    name = spec.event_time_field
    raw = fields.get(name)
    if raw is None:
        raise RecordError("missing_event_time", f"event-time field {name!r} is missing")
    try:
        ms = parse_event_time(raw, spec.event_time_format)
    except (ValueError, OverflowError) as exc:
        raise RecordError("bad_event_time", f"event-time field {name!r}: {exc}") from None
    ingest = ingest_time_ms if ingest_time_ms is not None and ingest_time_ms >= 0 else None
    check_event_time(name, raw, ms, (ingest, spec.now_ms), spec.max_future_ms, spec.event_time_format)
    return ms


# --------------------------------------------------------------------------- values


def _is_unicode(text: str) -> bool:
    """False for strings holding unpaired surrogates (JSON ``\\ud800``), which no encoder writes."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def infer_type(value) -> Optional[str]:
    """Type of a JSON/Parquet value (lists: of their scalars); None when it has none."""
    if isinstance(value, list):
        if any(isinstance(v, (list, dict)) for v in value):
            return None
        types = {infer_type(v) for v in value if v is not None}
        return types.pop() if len(types) == 1 else (FLOAT if types == {INT, FLOAT} else None)
    if isinstance(value, (bool, int)):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return BYTES
    return None


def infer_text_type(text: str) -> str:
    """Type of an untyped text value (CSV) before a schema exists: integer text is INT, decimal
    or exponent notation is FLOAT, anything else BYTES; a leading zero before a digit (``"01234"``,
    an identifier or a postal code) keeps a value text."""
    stripped = text.strip()
    if _LEADING_ZERO.match(stripped):
        return BYTES
    if _INT_TEXT.fullmatch(stripped):
        return INT
    if _FLOAT_TEXT.fullmatch(stripped):
        return FLOAT
    return BYTES


def _mismatch(name: str, kind: str, value) -> RecordError:
    return RecordError("type_mismatch",
                       f"feature {name!r}: expected {kind}, got {type(value).__name__} {preview(value)}")


def _float_range_error(name: str, value) -> RecordError:
    return RecordError("value_out_of_range", f"feature {name!r}: {preview(value)} is beyond the FLOAT range "
                                             f"(float32, magnitude at most {FLOAT32_MAX:.4g})")


def _to_float(name: str, value) -> float:
    if type(value) is float and -FLOAT32_MAX <= value <= FLOAT32_MAX:  # the usual case (NaN fails it)
        return value
    if isinstance(value, str):
        if not _FLOAT_TEXT.fullmatch(value.strip()):
            raise _mismatch(name, FLOAT, value)
        number = float(value)
        if math.isinf(number):  # the text's exponent overflows even float64
            raise _float_range_error(name, value)
        value = number
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _mismatch(name, FLOAT, value)
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError("type_mismatch", f"feature {name!r}: value {value} is not finite")
    if abs(value) > FLOAT32_MAX:  # exact for ints of any size
        raise _float_range_error(name, value)
    return float(value)


def _to_int(name: str, value) -> int:
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:  # the usual case
        return value
    if isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            try:
                value = int(text)
            except ValueError:  # more digits than Python converts: far outside int64
                raise RecordError("value_out_of_range", f"feature {name!r}: {preview(value)} is outside "
                                                        "the INT range (int64)") from None
        elif _FLOAT_TEXT.fullmatch(text):
            value = float(text)
        else:
            raise _mismatch(name, INT, value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise _mismatch(name, INT, value)
        value = int(value)
    if not isinstance(value, int):
        raise _mismatch(name, INT, value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise RecordError("value_out_of_range",
                          f"feature {name!r}: {preview(value)} is outside the INT range (int64: "
                          f"{INT64_MIN}..{INT64_MAX})")
    return value


def _to_text(name: str, value) -> str:
    if type(value) is str and value.isascii():  # the usual case
        return value
    if not isinstance(value, str):
        raise _mismatch(name, BYTES, value)
    if not _is_unicode(value):
        raise RecordError("not_utf8", f"feature {name!r}: string {preview(value)} is not valid Unicode "
                                      "(an unpaired surrogate)")
    return value


_COERCE = {FLOAT: _to_float, INT: _to_int, BYTES: _to_text}


def coerce_value(name: str, value, kind: str) -> Union[int, float, str, list]:
    """Value converted to ``kind``, or RecordError (a ValueError) naming the feature and the problem."""
    convert = _COERCE[kind]
    if not isinstance(value, list):
        return convert(name, value)
    for item in value:
        if item is None:
            raise RecordError("type_mismatch", f"feature {name!r}: a list holds null, got {preview(value)}")
        if isinstance(item, (list, dict)):
            raise RecordError("type_mismatch", f"feature {name!r}: nested lists and objects are not supported, "
                                               f"got {preview(value)}")
    return [convert(name, item) for item in value]


def _features(fields: dict, spec: DecodeSpec, text_values: bool) -> dict:
    types = spec.feature_types
    features = {}
    for name, value in fields.items():
        # The usual value, already of its feature's type (or, before a schema, of the type its
        # JSON gives) and in range under an ASCII name, is kept as it is without a call: what
        # the general path below returns for it too.
        kind, cls = types.get(name), type(value)
        if cls is float:
            if (kind is None or kind == FLOAT) and -FLOAT32_MAX <= value <= FLOAT32_MAX and name.isascii():
                features[name] = value
                continue
        elif cls is int:
            if (kind is None or kind == INT) and INT64_MIN <= value <= INT64_MAX and name.isascii():
                features[name] = value
                continue
        elif cls is str:
            if (kind == BYTES or (kind is None and not text_values)) and value.isascii() and name.isascii():
                features[name] = value
                continue
        if value is None or (isinstance(value, list) and not value):
            continue
        if not name.isascii() and not _is_unicode(name):
            raise RecordError("not_utf8", f"key {preview(name)} is not valid Unicode (an unpaired surrogate)")
        if kind is None:
            kind = infer_text_type(value) if text_values and isinstance(value, str) else infer_type(value)
        if kind is None:
            raise RecordError("type_mismatch", f"feature {name!r}: unsupported value {preview(value)} "
                                               "(a scalar or a flat list of scalars is expected)")
        features[name] = coerce_value(name, value, kind) if isinstance(value, list) else _COERCE[kind](name, value)
    return features


# --------------------------------------------------------------------------- records


def _object_of_unique_keys(pairs) -> dict:
    seen = set()
    for key, _value in pairs:
        if key in seen:
            raise RecordError("duplicate_key", f"key {preview(key)} appears twice in one object")
        seen.add(key)
    return dict(pairs)


def check_duplicate_keys(text, obj: dict) -> None:
    """RecordError ``duplicate_key`` if the JSON ``text`` (str, or its UTF-8 bytes; already
    parsed into ``obj``) repeats a key in one object. Cheap for the usual flat, tightly written
    record: with one ``{`` there is no nested object, and when the count of ``":`` (every key is
    followed by it) equals the keys parsed, no key was lost; otherwise the text is parsed again
    with a hook that sees every key, and so is a text where a quote is followed by whitespace (a
    key may be followed by whitespace before its colon). In UTF-8 no byte of a multi-byte
    character is ASCII, so the counts are the same on the bytes as on the text."""
    if isinstance(text, bytes):
        if text.count(b"{") == 1 and text.count(b'":') == len(obj) and _LOOSE_KEY_BYTES.search(text) is None:
            return
        text = text.decode("utf-8")
    elif text.count("{") == 1 and text.count('":') == len(obj) and _LOOSE_KEY.search(text) is None:
        return
    json.loads(text, object_pairs_hook=_object_of_unique_keys)


def _fast_json_object(raw: bytes) -> Optional[dict]:
    """The JSON object in ``raw`` parsed by orjson (C, about 5x faster here), or None where the
    exact path (Python's parser) must decide: orjson fails (not UTF-8, not JSON, the NaN and
    Infinity literals Python takes, unpaired surrogate escapes, numbers beyond float64), the value
    is not an object, or orjson's answer may differ from Python's: an integer literal outside
    int64..uint64 comes back as a float, so any float of magnitude 2**63 or more (top-level or in
    a list) sends the record the exact way, and so does any nested object or list (a dead letter
    whose detail shows the value). Otherwise the same dict as ``json.loads`` (values and
    key order; duplicate keys are checked after either parser)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    for value in obj.values():
        cls = type(value)
        if cls is float:
            if not -_TWO_63 < value < _TWO_63:
                return None
        elif cls is list:
            for item in value:
                kind = type(item)
                if (kind is float and not -_TWO_63 < item < _TWO_63) or kind is list or kind is dict:
                    return None
        elif cls is dict:
            return None
    return obj


def parse_json_object(raw: Optional[bytes], max_bytes: int) -> dict:
    """The JSON object in ``raw``, or RecordError."""
    if raw is None:
        raise RecordError("tombstone", "null value (tombstone): no event to decode")
    if len(raw) > max_bytes:
        raise RecordError("oversize", f"value of {len(raw)} bytes exceeds the limit of {max_bytes}")
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
    obj = _fast_json_object(raw)
    if obj is not None:
        check_duplicate_keys(raw, obj)
        return obj
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError("not_utf8", f"value is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            check_duplicate_keys(text, obj)
    except RecursionError:
        raise RecordError("bad_json", "not valid JSON: nested too deeply to parse") from None
    except RecordError:
        raise
    except ValueError as exc:
        raise RecordError("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError("not_object", f"JSON value is a {type(obj).__name__}, expected an object")
    return obj


def _event_id(fields: dict, id_field: str) -> str:
    raw_id = fields.get(id_field)
    if raw_id is None or raw_id == "":
        raise RecordError("missing_id", f"id field {id_field!r} is missing or empty")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise RecordError("bad_id", f"id field {id_field!r}: expected a string or an integer, got "
                                    f"{type(raw_id).__name__} {preview(raw_id)}")
    if isinstance(raw_id, str) and not _is_unicode(raw_id):
        raise RecordError("bad_id", f"id field {id_field!r}: {preview(raw_id)} is not valid Unicode")
    return str(raw_id)


def decode_record(record: SourceRecord, spec: DecodeSpec) -> Union[Event, DeadLetter]:
    """Decode one record. Pure: no I/O, same input gives the same output."""

    def dead(reason: str, detail: str, event_time_ms: Optional[int] = None) -> DeadLetter:
        return DeadLetter(reason, detail, record.raw, record.source, record.position, event_time_ms)

    if record.error is not None:
        return dead(*record.error)
    try:
        if record.fields is None:
            fields = parse_json_object(record.raw, spec.max_value_bytes)
        else:
            fields = record.fields
            if record.raw is not None and len(record.raw) > spec.max_value_bytes:
                raise RecordError("oversize", f"row of {len(record.raw)} bytes exceeds the limit of "
                                              f"{spec.max_value_bytes}")
        event_id = _event_id(fields, spec.id_field)
        event_time_ms = _event_time(fields, spec, record.ingest_time_ms)
    except RecordError as exc:
        return dead(exc.reason, str(exc))
    try:
        features = _features(fields, spec, record.text_values)
    except RecordError as exc:
        return dead(exc.reason, str(exc), event_time_ms)
    return Event(event_id, event_time_ms, features, record.source, record.position, record.ingest_time_ms)


class Decode(beam.PTransform):
    """SourceRecords -> (events, deadletter)."""

    def __init__(self, spec: DecodeSpec):
        super().__init__()
        self._spec = spec

    def expand(self, records):
        return route(records, "DecodeRecords", decode_record, self._spec)
