"""Typed configuration sections from plain frozen dataclasses: checking, loading, JSON Schema.

A section is a frozen dataclass deriving from ``Section``; its type hints say what each value may
be: ``str``, ``int``, ``float``, ``bool``, ``Optional[...]``, ``tuple[X, ...]``, ``dict[str, X]``,
``Literal[...]`` for a choice, another section, and ``Annotated[..., rule]`` with the rules below
(``Range`` bounds, ``Duration``/``WholeSeconds`` strings such as "15m", ``Matches`` a pattern,
``Schema`` for shapes a hint cannot say). A string right after a field is its documentation.

``build`` makes a section from parsed YAML, rejecting unknown keys with their full path and the
keys allowed there; every error names the key and the fix. ``json_schema_of`` turns the same hints
and field docstrings into a JSON Schema for editors. pipeline/config.py declares ctpipe's sections.

(Plain dataclasses rather than pydantic: importing pydantic and building its models cost about
0.4 s of CPU here, and the read-only commands, which load the config, must answer well under a
second.)
"""
from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping, Optional

from core.errors import ConfigError

_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def duration_ms(text: str) -> int:
    """Milliseconds in a duration string ("500ms", "90s", "15m", "1h", "1d"); ValueError says the format."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a number and a unit, e.g. '90s', '15m', '1h', '1d'")
    return int(match.group(1)) * _DURATION_MS[match.group(2)]


def parse_duration(text: str | int | float, *, key: str = "duration") -> float:
    """Seconds in a duration string ("15m", "1h"); bare numbers are seconds."""
    if isinstance(text, bool):
        raise ConfigError(f"{key}: expected a duration such as '1h', got {text!r}")
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return duration_ms(str(text)) / 1000
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


# --------------------------------------------------------------------------- value rules


@dataclass(frozen=True)
class Range:
    """Bounds of a number (``Annotated[int, Range(ge=1)]``)."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None

    def check(self, value) -> Optional[str]:
        if self.ge is not None and value < self.ge:
            return f"{value!r} must be at least {self.ge:g}"
        if self.gt is not None and value <= self.gt:
            return f"{value!r} must be above {self.gt:g}"
        if self.le is not None and value > self.le:
            return f"{value!r} must be at most {self.le:g}"
        if self.lt is not None and value >= self.lt:
            return f"{value!r} must be below {self.lt:g}"
        return None

    def schema(self) -> dict:
        names = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
        return {names[k]: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class _DurationRule:
    """A duration string; ``whole_seconds``: no fraction of a second (``Duration``, ``WholeSeconds``)."""

    whole_seconds: bool = False

    def check(self, value) -> Optional[str]:
        try:
            ms = duration_ms(value)
        except ValueError as exc:
            return str(exc)
        if self.whole_seconds and ms % 1000:
            return f"{value!r} is not a whole number of seconds; write whole seconds, e.g. '1s', '90s', '15m'"
        return None

    def schema(self) -> dict:
        return {"pattern": _DURATION_RE.pattern, "examples": ["90s", "15m", "1h", "1d"]}


@dataclass(frozen=True)
class Schema:
    """JSON Schema that replaces the one generated from the type hint (for shapes hints cannot say)."""

    schema: dict

    def check(self, value) -> Optional[str]:
        return None


@dataclass(frozen=True)
class Matches:
    """A string matching ``pattern`` (``Annotated[str, Matches(...)]``); ``what`` says what it should be."""

    pattern: str
    what: str

    def check(self, value) -> Optional[str]:
        return None if re.fullmatch(self.pattern, value) else f"{value!r} is not {self.what}"

    def schema(self) -> dict:
        return {"pattern": f"^{self.pattern}$"}


Duration = Annotated[str, _DurationRule()]
WholeSeconds = Annotated[str, _DurationRule(whole_seconds=True)]


class Invalid(ConfigError):
    """A bad value inside one section, ``key`` relative to it (None: the section as a whole);
    loading re-raises it with the section's full path."""

    def __init__(self, key: Optional[str], message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key, self.message = key, message


@functools.lru_cache(maxsize=None)
def field_hints(cls) -> dict:
    """Field name -> type hint (with its Annotated rules) of section ``cls``."""
    return typing.get_type_hints(cls, include_extras=True)


def _unwrap(hint) -> tuple[Any, list, bool]:
    """(the type behind Annotated[...] and Optional[...], the rules attached to it, whether None is allowed)."""
    rules, optional = [], False
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            rules += list(hint.__metadata__)
            hint = typing.get_args(hint)[0]
        elif origin is typing.Union:
            optional = True
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        else:
            return hint, rules, optional


def _or_list(choices) -> str:
    names = [str(c) for c in choices]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


class Section:
    """Base of every config section: each field's value is checked against its hint's rules
    (choices, bounds, durations) whenever a section is built; ``replace`` makes a checked copy."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            hint, rules, optional = _unwrap(field_hints(type(self))[f.name])
            if value is None and optional:
                continue
            if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
                raise Invalid(f.name, f"{value!r} is not one of {_or_list(typing.get_args(hint))}")
            for rule in rules:
                problem = rule.check(value)
                if problem:
                    raise Invalid(f.name, problem)

    def replace(self, **changes):
        """A checked copy with ``changes`` applied (sections are frozen)."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- loading


def to_plain(value):
    """``value`` with sections as dicts and tuples as lists (JSON- and YAML-ready)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [to_plain(v) for v in value]
    return value


_SECRET_WORDS = ("password", "secret", "token")


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def build(cls, data: Any, path: str = ""):
    """Section ``cls`` from parsed YAML ``data`` (None: its defaults) found at key ``path``;
    ConfigError names the first bad key by its full path and says how to fix it."""
    if data is None:
        return cls()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        hint = ""
        if any(word in str(unknown[0]).lower() for word in _SECRET_WORDS):
            hint = ("; secrets are never read from the config: name the environment variable (..._env) or the "
                    "mounted file (..._file) that holds it")
        raise ConfigError(f"unknown key {_join(path, unknown[0])!r}; allowed keys here: "
                          f"{', '.join(sorted(names))}{hint}")
    hints = field_hints(cls)
    kwargs = {name: _coerce(hints[name], value, _join(path, name)) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except Invalid as exc:
        where = _join(path, exc.key) if exc.key else path
        raise ConfigError(f"{where or 'config'}: {exc.message}") from None


def _coerce(hint, value, path: str):
    """``value`` (as YAML parsed it) as the type ``hint`` names; ConfigError names ``path``.
    Choices, bounds and durations are checked by the section itself (Section.__post_init__)."""
    hint, _rules, optional = _unwrap(hint)
    if value is None and optional:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)  # null: the section's defaults
    if origin is Literal:
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], item, _join(path, i)) for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _coerce(args[1], v, _join(path, str(k))) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    return value


# --------------------------------------------------------------------------- JSON Schema


def _field_docs(cls) -> dict:
    """{class name: {field: docstring}} of the module that defines ``cls`` (a string right after a field)."""
    import ast
    import inspect
    import sys

    docs: dict = {}
    for node in ast.walk(ast.parse(inspect.getsource(sys.modules[cls.__module__]))):
        if isinstance(node, ast.ClassDef):
            body = node.body
            for prev, nxt in zip(body, body[1:]):
                if (isinstance(prev, ast.AnnAssign) and isinstance(prev.target, ast.Name)
                        and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                        and isinstance(nxt.value.value, str)):
                    docs.setdefault(node.name, {})[prev.target.id] = " ".join(nxt.value.value.split())
    return docs




def _schema_of(hint, defs: dict, docs: dict) -> dict:
    """JSON Schema of a field's type hint (section types go to ``defs``)."""
    hint, rules, nullable = _unwrap(hint)
    override = next((r.schema for r in rules if isinstance(r, Schema)), None)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if override is not None:
        out = dict(override)
    elif dataclasses.is_dataclass(hint):
        _define(hint, defs, docs)
        out = {"$ref": f"#/$defs/{hint.__name__}"}
    elif origin is Literal:
        out = {"enum": list(args)}
    elif origin is tuple:
        out = {"type": "array", "items": _schema_of(args[0], defs, docs)}
    elif origin is dict:
        out = {"type": "object", "additionalProperties": _schema_of(args[1], defs, docs)}
    else:
        out = {"type": {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}[hint]}
    for rule in rules:
        if not isinstance(rule, Schema):
            out.update(rule.schema())
    return {"anyOf": [out, {"type": "null"}]} if nullable else out


def _define(cls, defs: dict, docs: dict) -> None:
    if cls.__name__ in defs:
        return
    defs[cls.__name__] = {}
    properties = {}
    for f in dataclasses.fields(cls):
        prop = _schema_of(field_hints(cls)[f.name], defs, docs)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if not dataclasses.is_dataclass(default):  # a section's defaults are in its own definition
            prop["default"] = to_plain(default)
        if f.name in docs.get(cls.__name__, {}):
            prop["description"] = docs[cls.__name__][f.name]
        properties[f.name] = prop
    defs[cls.__name__] = {"type": "object", "additionalProperties": False, "properties": properties}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        defs[cls.__name__]["description"] = " ".join(cls.__doc__.split())


def json_schema_of(cls, title: str) -> dict:
    """JSON Schema (draft 2020-12) of section ``cls`` as a whole file, its sections under $defs."""
    defs: dict = {}
    _define(cls, defs, _field_docs(cls))
    root = defs.pop(cls.__name__)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **root,
            "$defs": dict(sorted(defs.items()))}
