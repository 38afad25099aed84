"""Five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in UTC.

The controller's ``schedule`` policy (pipeline/policies.py) asks one question: did a scheduled
time pass between the last check and now? :func:`next_after` answers it without a clock of its
own, so it is tested with plain datetimes.

Syntax, per field: ``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n`` or ``a/n``, and
comma-separated lists of those. Months accept ``jan``..``dec``, days of the week ``sun``..``sat``
(0 and 7 are both Sunday). As in Vixie cron, when both day-of-month and day-of-week are restricted
(neither is ``*``), a day matches if either does. The shorthands ``@hourly``, ``@daily``,
``@weekly``, ``@monthly`` and ``@yearly`` are accepted.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from core.errors import ConfigError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_NAMES = {
    3: {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}
_SHORTHANDS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
               "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_SEARCH_YEARS = 5
"""How far ahead :func:`next_after` looks (an expression such as ``0 0 30 2 *`` never matches)."""


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the allowed values of each field."""

    text: str
    minutes: frozenset
    hours: frozenset
    days: frozenset
    months: frozenset
    weekdays: frozenset  # 0 = Sunday .. 6 = Saturday
    any_day: bool
    any_weekday: bool

    def matches_day(self, day: dt.date) -> bool:
        weekday = (day.weekday() + 1) % 7  # Python: Monday = 0; cron: Sunday = 0
        if self.any_day or self.any_weekday:
            return day.day in self.days and weekday in self.weekdays
        return day.day in self.days or weekday in self.weekdays


def _bad(text: str, what: str) -> ConfigError:
    return ConfigError(f"controller.policies.schedule: {text!r} is not a cron expression ({what}); write five "
                       "fields 'minute hour day-of-month month day-of-week' in UTC, e.g. '0 */6 * * *' "
                       "(every 6 hours) or '30 2 * * mon-fri'")


def _number(token: str, index: int, text: str) -> int:
    token = token.lower()
    if token in _NAMES.get(index, {}):
        return _NAMES[index][token]
    if not token.isdigit():
        raise _bad(text, f"{_FIELDS[index][0]} {token!r} is not a number")
    return int(token)


def _field(spec: str, index: int, text: str) -> frozenset:
    name, low, high = _FIELDS[index]
    values: set[int] = set()
    for part in spec.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _bad(text, f"{name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = _number(first, index, text), _number(last, index, text)
        else:
            start = _number(body, index, text)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise _bad(text, f"{name} {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def parse(text: str) -> Cron:
    """The :class:`Cron` of ``text``; ConfigError naming the bad field otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "empty")
    expanded = _SHORTHANDS.get(text.strip().lower(), text)
    fields = expanded.split()
    if len(fields) != 5:
        raise _bad(text, f"{len(fields)} fields instead of 5")
    minutes, hours, days, months, weekdays = (_field(f, i, text) for i, f in enumerate(fields))
    return Cron(text, minutes, hours, days, months, weekdays,
                any_day=fields[2] == "*", any_weekday=fields[4] == "*")


def next_after(cron: Cron, after: dt.datetime) -> dt.datetime | None:
    """The first scheduled minute strictly after ``after`` (an aware datetime), in UTC; None when
    the expression matches no day within the next few years."""
    t = after.astimezone(dt.timezone.utc).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    limit = t + dt.timedelta(days=366 * _SEARCH_YEARS)
    while t <= limit:
        if t.month not in cron.months:
            t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            continue
        if not cron.matches_day(t.date()):
            t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            continue
        if t.hour not in cron.hours:
            t = t.replace(minute=0) + dt.timedelta(hours=1)
            continue
        if t.minute not in cron.minutes:
            t += dt.timedelta(minutes=1)
            continue
        return t
    return None
