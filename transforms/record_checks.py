"""Record-level schema checks after Decode: type, closed domain, numeric range -> dead-letter.

``check_event`` is the pure function; ``CheckRecords`` wraps it in a PTransform with the outputs
``events`` and ``deadletter`` (nothing is dropped). The rules come from the curated schema
(``record_rules``): a feature's type, its string domain when the domain is closed (TFDV's
``distribution_constraints.min_domain_mass`` is 1, the default) and ``float_domain`` /
``int_domain`` min/max. Inferred schemas carry no ranges: ranges are curated with
``ctpipe schema set``.

A feature with a fixed ``shape`` (what inference gives a feature that was always present with
one value) must be in every record and hold exactly that many values: tf.Transform feeds such
features as dense tensors, and one record without it, or with a list of two, fails the whole
window's transform (and, in ``ctpipe stream``, every replay of it).

Dead-letter reasons: ``missing_feature``, ``shape_mismatch``, ``type_mismatch``,
``domain_violation``, ``range_violation``.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Optional, Union

import apache_beam as beam
from tensorflow_metadata.proto.v0 import schema_pb2

from core.records import DeadLetter, Event
from transforms.decode import decode_record, preview
from transforms.routing import route, route_steps

_TYPES = {schema_pb2.INT: "INT", schema_pb2.FLOAT: "FLOAT", schema_pb2.BYTES: "BYTES"}


@dataclass(frozen=True)
class FeatureRule:
    kind: str                          # INT | FLOAT | BYTES
    domain: Optional[frozenset] = None  # closed set of allowed strings
    minimum: Optional[float] = None
    maximum: Optional[float] = None


@dataclass(frozen=True)
class RecordRules:
    features: dict = field(default_factory=dict)
    """feature name -> FeatureRule."""
    required: tuple = ()
    """Features every record must carry (sorted)."""
    value_counts: dict = field(default_factory=dict)
    """feature name -> the exact number of values its fixed shape holds."""

    @functools.cached_property
    def ordered(self) -> tuple:
        """(name, kind's own class, count, domain, minimum, maximum, rule) of every ruled feature,
        in name order (what ``violation`` walks; computed once per rules object)."""
        return tuple((name, _EXACT[rule.kind], self.value_counts.get(name), rule.domain, rule.minimum,
                      rule.maximum, rule) for name, rule in sorted(self.features.items()))


def record_rules(schema: schema_pb2.Schema) -> RecordRules:
    """The per-record rules a schema implies (see the module docstring)."""
    domains = {d.name: frozenset(d.value) for d in schema.string_domain}
    rules = {}
    for feature in schema.feature:
        if feature.type not in _TYPES:
            continue
        domain = None
        closed = (not feature.HasField("distribution_constraints")
                  or feature.distribution_constraints.min_domain_mass >= 1.0)
        if feature.type == schema_pb2.BYTES and closed:
            if feature.HasField("string_domain"):
                domain = frozenset(feature.string_domain.value)
            elif feature.HasField("domain") and feature.domain in domains:
                domain = domains[feature.domain]
        low = high = None
        if feature.HasField("float_domain"):
            low = feature.float_domain.min if feature.float_domain.HasField("min") else None
            high = feature.float_domain.max if feature.float_domain.HasField("max") else None
        elif feature.HasField("int_domain"):
            low = feature.int_domain.min if feature.int_domain.HasField("min") else None
            high = feature.int_domain.max if feature.int_domain.HasField("max") else None
        rules[feature.name] = FeatureRule(_TYPES[feature.type], domain, low, high)
    shaped = {f.name: math.prod(d.size for d in f.shape.dim) for f in schema.feature if f.HasField("shape")}
    return RecordRules(rules, tuple(sorted(shaped)), shaped)


def _type_ok(value, kind: str) -> bool:
    if kind == "BYTES":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if kind == "INT":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


_ABSENT = object()


def violation(event: Event, rules: RecordRules) -> Optional[tuple[str, str]]:
    """(reason, detail) of the first rule ``event`` breaks, features in name order; None if none."""
    features = event.features
    for name in rules.required:
        if name not in features:
            return "missing_feature", f"feature {name!r} is required in every record by the schema but is missing"
    get = features.get
    for name, exact, count, domain, low, high, rule in rules.ordered:
        value = get(name, _ABSENT)
        if value is _ABSENT:
            continue  # features without a rule are skipped: a new column is a window-level anomaly
        # the usual value: one, of its kind's own class (finite for a float), inside its domain and range
        if (type(value) is exact and (count is None or count == 1)
                and (exact is not float or -math.inf < value < math.inf)
                and (domain is None or value in domain) and (low is None or value >= low)
                and (high is None or value <= high)):
            continue
        broken = _feature_violation(name, value, rule, count)
        if broken is not None:
            return broken
    return None


def _feature_violation(name: str, value, rule: FeatureRule, count: Optional[int]) -> Optional[tuple[str, str]]:
    items = value if isinstance(value, list) else [value]
    if count is not None and len(items) != count:
        return "shape_mismatch", f"feature {name!r}: {len(items)} values, the schema's shape holds exactly {count}"
    for item in items:
        if not _type_ok(item, rule.kind):
            return "type_mismatch", f"feature {name!r}: expected {rule.kind}, got {type(item).__name__} {preview(item)}"
        if rule.domain is not None and item not in rule.domain:
            return ("domain_violation",
                    f"feature {name!r}: value {preview(item)} is not in the schema's domain "
                    f"({len(rule.domain)} values); add it with `ctpipe schema set` if it is valid")
        if rule.minimum is not None and item < rule.minimum:
            return "range_violation", f"feature {name!r}: value {item} is below the schema minimum {rule.minimum}"
        if rule.maximum is not None and item > rule.maximum:
            return "range_violation", f"feature {name!r}: value {item} is above the schema maximum {rule.maximum}"
    return None


_EXACT = {"BYTES": str, "INT": int, "FLOAT": float}
"""The class a value of each kind usually has (``type`` is exact: a bool is not an ``int`` here)."""


def event_json(event: Event) -> bytes:
    """The decoded record as JSON bytes (the dead letter's replayable payload)."""
    return json.dumps({"id": event.id, "event_time_ms": event.event_time_ms, "features": event.features},
                      sort_keys=True).encode()


def check_event(event: Event, rules: RecordRules) -> Union[Event, DeadLetter]:
    """``event`` itself when it fits the schema, else a DeadLetter naming the feature and rule."""
    broken = violation(event, rules)
    if broken is None:
        return event
    return DeadLetter(broken[0], broken[1], event_json(event), event.source, event.position, event.event_time_ms)


class CheckRecords(beam.PTransform):
    """Events -> (events that fit the schema, dead letters with the broken rule)."""

    def __init__(self, schema: schema_pb2.Schema):
        super().__init__()
        self._rules = record_rules(schema)

    def expand(self, events):
        return route(events, "CheckRecords", check_event, self._rules)


class DecodeAndCheck(beam.PTransform):
    """SourceRecords -> (events that decode and fit the schema, dead letters): ``Decode`` then
    ``CheckRecords`` in one DoFn (transforms/routing.py: one runner hop per record, not two). The
    same events, dead letters and counters as the two transforms one after the other."""

    def __init__(self, spec, schema: schema_pb2.Schema):
        super().__init__()
        self._spec = spec
        self._rules = record_rules(schema)

    def expand(self, records):
        return route_steps(records, "DecodeAndCheck", ((decode_record, self._spec), (check_event, self._rules)))
