"""The fast paths of decoding and record checks give exactly what the general paths give.

- JSON: orjson parses a record first (``decode._fast_json_object``); on any record where it fails
  or could differ, Python's parser decides. Every hostile record below, and random mixes of them,
  must decode to the same Event or DeadLetter (reason and detail) with the fast parser as without.
- Features: a value already of its type is kept without a call; the rules of the module
  docstring, applied value by value with ``coerce_value``, must give the same features or error.
- Record checks: ``violation`` with its one-test path for the usual value must name the same
  first broken rule as the rules applied one by one in name order.
"""
import math
import random

import pytest

from core.records import Event, SourceRecord
from transforms import decode
from transforms.decode import (
    BYTES,
    FLOAT,
    INT,
    DecodeSpec,
    RecordError,
    coerce_value,
    decode_record,
    infer_text_type,
    infer_type,
)
from transforms.record_checks import FeatureRule, RecordRules, violation

TS = '"ts": "2026-11-27T00:00:00Z"'
HOSTILE = [
    b'{"id": "a", ' + TS.encode() + b', "x": 1.5, "n": 3, "s": "v"}',
    b'{"id":"a","ts":"2026-11-27T00:00:00Z","x":1.5,"n":3,"s":"v"}',
    b'{"id": -9223372036854775809, ' + TS.encode() + b'}',
    b'{"id": 18446744073709551616, ' + TS.encode() + b'}',
    b'{"id": "a", "ts": -9223372036854775809}',
    b'{"id": "a", "ts": 99999999999999999999}',
    b'{"id": "a", ' + TS.encode() + b', "n": -9223372036854775809}',
    b'{"id": "a", ' + TS.encode() + b', "n": 9223372036854775808}',
    b'{"id": "a", ' + TS.encode() + b', "n": 18446744073709551615}',
    b'{"id": "a", ' + TS.encode() + b', "x": 99999999999999999999}',
    b'{"id": "a", ' + TS.encode() + b', "s": 123456789012345678901234567890}',
    b'{"id": "a", ' + TS.encode() + b', "n": [1, -9223372036854775809]}',
    b'{"id": "a", ' + TS.encode() + b', "n": [[-9223372036854775809]]}',
    b'{"id": "a", ' + TS.encode() + b', "n": {"k": -9223372036854775809}}',
    b'{"id": "a", ' + TS.encode() + b', "x": 1e400}',
    b'{"id": "a", ' + TS.encode() + b', "x": 1e-400}',
    b'{"id": "a", ' + TS.encode() + b', "x": NaN}',
    b'{"id": "a", ' + TS.encode() + b', "x": -Infinity}',
    b'{"id": "a", ' + TS.encode() + b', "x": 3.5e38}',
    b'{"id": "a", ' + TS.encode() + b', "x": -0.0, "n": -0}',
    b'{"id": "a", ' + TS.encode() + b', "n": true, "x": false, "s": true}',
    b'{"id": "a", ' + TS.encode() + b', "n": 2.0, "x": 2, "s": 2}',
    b'{"id": "a", ' + TS.encode() + b', "n": "7", "x": "7.5", "s": "7"}',
    b'{"id": "a", ' + TS.encode() + b', "n": [1, 2.0], "x": [1, 2.5], "s": ["a", "b"]}',
    b'{"id": "a", ' + TS.encode() + b', "n": [1, null], "x": [], "s": null}',
    b'{"id": "a", ' + TS.encode() + b', "s": "\\ud800"}',
    b'{"id": "\\udc00x", ' + TS.encode() + b'}',
    b'{"id": "a", ' + TS.encode() + b', "\\ud800": 1}',
    b'{"id": "a", ' + TS.encode() + b', "s": "\\u00e9t\\u00e9", "\\u00e9": "caf\\u00e9"}',
    '{"id": "é", "ts": "2026-11-27T00:00:00Z", "s": "naïve"}'.encode(),
    b'{"id": "a", ' + TS.encode() + b', "s": "\xff"}',
    b'{"id": "a", ' + TS.encode() + b', "s": "a\x01b"}',
    b'{"id": "a", "id": "b", ' + TS.encode() + b'}',
    b'{"id":"a","id":"b","ts":"2026-11-27T00:00:00Z"}',
    b'{"id" : "a", "id" : "b", ' + TS.encode() + b'}',
    b'{"id" : "a", "id" : "b\\":", ' + TS.encode() + b'}',  # a lost key's count made up inside a string
    b'{"id": "a", ' + TS.encode() + b', "s": "x\\":", "s": "y"}',
    b'{"id": "a", ' + TS.encode() + b', "o": {"s": 1, "s": 2}}',
    b'\xef\xbb\xbf{"id": "a", ' + TS.encode() + b'}',
    b'[1, 2]',
    b'"text"',
    b'{"id": ',
    b'{"id": "a", ' + TS.encode() + b'} trailing',
    b'[' * 3000 + b']' * 3000,
    b'{"a":' * 3000 + b'1' + b'}' * 3000,
    b'{"id": 7, "ts": 1764201600}',
    b'{"id": "", "ts": 1764201600000}',
    b'{"id": "a", "ts": "not a time"}',
    b'{"id": "a", "ts": 1.5e300}',
    b'{"id": "a", "ts": "3000-01-01T00:00:00Z"}',
    b'\t{"id": "a", ' + TS.encode() + b'}\r',
]
FIELDS = [b'"x": 1.25', b'"x": -7', b'"n": 42', b'"n": 1e19', b'"n": -1.0e19', b'"s": "\\u0041"', b'"s": true',
          b'"n": 9223372036854775807', b'"n": -9223372036854775808', b'"n": 92233720368547758080',
          b'"x": [0.5, 1e30]', b'"x": [1e39]', b'"s": ["\\ud83d\\ude00"]', b'"k": null', b'"n": 2.5',
          b'"x": 12345678901234567890.5', b'"s": 0.1']
SPECS = {
    "no schema": DecodeSpec("ts", "id"),
    "schema": DecodeSpec("ts", "id", feature_types={"x": FLOAT, "n": INT, "s": BYTES, "k": INT, "id": BYTES}),
    "everything BYTES": DecodeSpec("ts", "id", feature_types={"x": BYTES, "n": BYTES, "s": BYTES}),
    "everything INT": DecodeSpec("ts", "id", feature_types={"x": INT, "n": INT, "s": INT, "ts": INT}),
}


def _random_records(seed: int, n: int) -> list:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        fields = rng.sample(FIELDS, rng.randint(0, 4))
        head = [b'"id": "r"', TS.encode()]
        out.append(b"{" + b", ".join(head + fields) + b"}")
    return out


def _outcome(result):
    """What a decode result says, with the class of every value (1 and 1.0 and True differ)."""
    if isinstance(result, Event):
        return ("event", result.id, result.event_time_ms,
                sorted((k, repr(v), type(v).__name__) for k, v in result.features.items()))
    return ("dead", result.reason, result.detail, result.event_time_ms)


@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_orjson_first_decodes_every_record_as_the_exact_parser_does(spec_name, monkeypatch):
    spec = SPECS[spec_name]
    records = [SourceRecord("f.jsonl", str(i), raw) for i, raw in enumerate(HOSTILE + _random_records(3, 400))]
    fast = [_outcome(decode_record(r, spec)) for r in records]
    taken = sum(decode._fast_json_object(r.raw.removeprefix(b"\xef\xbb\xbf")) is not None for r in records)
    monkeypatch.setattr(decode, "_fast_json_object", lambda raw: None)
    exact = [_outcome(decode_record(r, spec)) for r in records]
    for record, got, want in zip(records, fast, exact):
        assert got == want, record.raw[:120]
    assert taken > len(records) // 2  # the fast parser did decide most of them


def _features_by_the_rules(fields: dict, types: dict, text_values: bool) -> dict:
    out = {}
    for name, value in fields.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        if not decode._is_unicode(name):
            raise RecordError("not_utf8", f"key {decode.preview(name)} is not valid Unicode (an unpaired surrogate)")
        kind = types.get(name)
        if kind is None:
            kind = infer_text_type(value) if text_values and isinstance(value, str) else infer_type(value)
        if kind is None:
            raise RecordError("type_mismatch", f"feature {name!r}: unsupported value {decode.preview(value)} "
                                               "(a scalar or a flat list of scalars is expected)")
        out[name] = coerce_value(name, value, kind)
    return out


VALUES = [0, 1, -1, 2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 63 - 1, 10 ** 40, True, False, 0.0, -0.0, 1.5, 2.0,
          3.4028234663852886e38, 3.5e38, -3.5e38, math.nan, math.inf, -math.inf, "", "a", "7", "007", "1e3", " 4 ",
          "\ud800", "é", [], [1, 2], [1.5, 2], [None], [[1]], {"a": 1}, None, ["x", "y"], [True]]


@pytest.mark.parametrize("text_values", [False, True])
def test_feature_values_of_their_own_type_are_kept_as_the_rules_say(text_values):
    rng = random.Random(11)
    names = ["a", "b", "c", "é", "\udc00"]
    for _ in range(3000):
        fields = {rng.choice(names): rng.choice(VALUES) for _ in range(rng.randint(1, 4))}
        types = {name: rng.choice([INT, FLOAT, BYTES]) for name in names if rng.random() < 0.6}
        spec = DecodeSpec("ts", "id", feature_types=types)
        try:
            want = ("ok", sorted((k, repr(v), type(v).__name__) for k, v in
                                 _features_by_the_rules(fields, types, text_values).items()))
        except RecordError as exc:
            want = ("error", exc.reason, str(exc))
        try:
            got = ("ok", sorted((k, repr(v), type(v).__name__) for k, v in
                                decode._features(fields, spec, text_values).items()))
        except RecordError as exc:
            got = ("error", exc.reason, str(exc))
        assert got == want, (fields, types)


def _first_broken_rule(features: dict, rules: RecordRules):
    """The record rules, one at a time: required features, then per feature in name order its shape,
    and per value its type, domain and range."""
    for name in rules.required:
        if name not in features:
            return "missing_feature", name
    for name in sorted(features):
        rule = rules.features.get(name)
        if rule is None:
            continue
        items = features[name] if isinstance(features[name], list) else [features[name]]
        if name in rules.value_counts and len(items) != rules.value_counts[name]:
            return "shape_mismatch", name
        for item in items:
            if rule.kind == "BYTES":
                ok = isinstance(item, str)
            elif rule.kind == "INT":
                ok = isinstance(item, int) and not isinstance(item, bool)
            else:
                ok = isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
            if not ok:
                return "type_mismatch", name
            if rule.domain is not None and item not in rule.domain:
                return "domain_violation", name
            if rule.minimum is not None and item < rule.minimum:
                return "range_violation", name
            if rule.maximum is not None and item > rule.maximum:
                return "range_violation", name
    return None


def test_record_checks_name_the_first_broken_rule_in_name_order():
    rng = random.Random(5)
    rules = RecordRules({"a": FeatureRule("FLOAT", None, 0.0, 10.0), "b": FeatureRule("INT", None, None, 5),
                         "c": FeatureRule("BYTES", frozenset({"x", "y"})), "d": FeatureRule("INT"),
                         "e": FeatureRule("FLOAT"), "f": FeatureRule("FLOAT")},
                        required=("a", "c"), value_counts={"a": 1, "c": 1, "e": 2})
    values = [0.0, 5.5, 10.0, 10.5, -1.0, 3, 6, 5, True, math.nan, math.inf, "x", "y", "z", 2 ** 70, None,
              [1.0, 2.0], [1.0], ["x"], [3, 4], [3, "x"], []]
    seen = set()
    for _ in range(20000):
        features = {name: rng.choice(values) for name in rng.sample("abcdefg", rng.randint(0, 7))}
        want = _first_broken_rule(features, rules)
        got = violation(Event("i", 0, features, "s", "1"), rules)
        assert (None if got is None else (got[0], got[1].split("'")[1] if "'" in got[1] else None)) == want, features
        seen.add(None if want is None else want[0])
    assert seen == {None, "missing_feature", "shape_mismatch", "type_mismatch", "domain_violation",
                    "range_violation"}
