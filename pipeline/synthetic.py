"""Synthetic sensor events for demos, tests and benchmarks (``ctpipe gen``).

The label is drawn from a logistic function of the features, so a model can learn it (AUC well
above 0.5). A small, known number of malformed lines and out-of-range values is mixed in; the
counts are returned so tests can check that every one of them reaches dead-letter.

For the evaluation gate (docs/GATE.md) there are streams whose *concept* (the relation between
features and label) changes abruptly every few windows while the features keep their
distribution (``drift_stream``), and label corruptions of one window (``corrupt_labels``): every
label flipped, a share of them flipped, or the labels shuffled among the rows.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import Iterator, Optional

FIRMWARES = ("v1", "v2", "v3")


@dataclass
class GenStats:
    valid: int = 0
    malformed: int = 0
    out_of_range: int = 0
    valid_ids: list = field(default_factory=list)


CONCEPTS = 2
"""Concept 0: the failure risk rises with temperature and vibration, firmware v1 fails more
(about 40% positives). Concept 1: it rises with humidity and firmware v3 fails more (about 50%
positives); temperature and vibration no longer matter. Both are about equally learnable."""


def concept_logit(concept: int, temperature: float, vibration: float, humidity: float, firmware: str) -> float:
    if concept == 0:
        return 0.12 * (temperature - 60.0) + 2.0 * (vibration - 1.1) + (0.9 if firmware == "v1" else -0.3) - 0.6
    if concept == 1:
        return 0.08 * (humidity - 50.0) + (1.2 if firmware == "v3" else -0.6)
    raise ValueError(f"concept must be 0..{CONCEPTS - 1}, not {concept!r}")


def event(rng: random.Random, index: int, ts_ms: int, *, mean_shift: float = 0.0, flip_label: bool = False,
          concept: int = 0) -> dict:
    device = rng.randrange(50)
    firmware = FIRMWARES[device % 3]
    temperature = rng.gauss(60.0 + mean_shift, 10.0)
    vibration = rng.lognormvariate(0.0, 0.4)
    humidity = rng.uniform(20.0, 80.0)
    logit = concept_logit(concept, temperature, vibration, humidity, firmware)
    label = int(rng.random() < 1.0 / (1.0 + math.exp(-logit)))
    if flip_label:
        label = 1 - label
    return {
        "id": f"ev-{index:09d}",
        "ts": dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "device_id": f"dev-{device:03d}",
        "firmware": firmware,
        "temperature": round(temperature, 3),
        "vibration": round(vibration, 4),
        "humidity": round(humidity, 2),
        "label": label,
    }


MALFORMED = (
    b'{"id": "broken", "ts": ',                                       # truncated JSON
    b'\xff\xfe not utf-8 at all',                                      # not UTF-8
    b'{"ts": "2026-11-27T00:10:00Z", "temperature": 50.0}',           # no id
    b'{"id": "bad-ts-%d", "ts": "yesterday-ish", "temperature": 1.0}',  # bad event time
    b'{"id": "bad-type-%d", "ts": "%s", "device_id": "dev-001", "firmware": "v1", "temperature": "hot", '
    b'"vibration": 1.0, "humidity": 40.0, "label": 0}',              # type mismatch
)


def generate(start: dt.datetime, hours: int, rows_per_hour: int, seed: int = 7,
             malformed_per_hour: int = 2, out_of_range_per_hour: int = 1, first_index: int = 0,
             mean_shift_from_hour: Optional[int] = None, mean_shift: float = 15.0,
             flip_label_from_hour: Optional[int] = None) -> Iterator[tuple[bytes, Optional[dict]]]:
    """Yields (line bytes, event dict or None for malformed), hour by hour in event-time order.

    ``mean_shift_from_hour``: from this hour on the temperature mean moves by ``mean_shift`` (drift).
    ``flip_label_from_hour``: from this hour on every label is inverted (a labelling bug: the
    features are unchanged, so data validation sees nothing odd but the relation is reversed).
    """
    rng = random.Random(seed)
    start_ms = int(start.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    index = first_index
    for hour in range(hours):
        base = start_ms + hour * 3_600_000
        shift = mean_shift if mean_shift_from_hour is not None and hour >= mean_shift_from_hour else 0.0
        flip = flip_label_from_hour is not None and hour >= flip_label_from_hour
        for _ in range(rows_per_hour):
            ev = event(rng, index, base + rng.randrange(3_600_000), mean_shift=shift, flip_label=flip)
            index += 1
            yield json.dumps(ev, sort_keys=True).encode(), ev
        for k in range(out_of_range_per_hour):
            ev = event(rng, index, base + rng.randrange(3_600_000), flip_label=flip)
            ev["humidity"] = 150.0 + k  # physically impossible, still a valid FLOAT
            index += 1
            yield json.dumps(ev, sort_keys=True).encode(), ev
        for k in range(malformed_per_hour):
            template = MALFORMED[(hour * malformed_per_hour + k) % len(MALFORMED)]
            ts = dt.datetime.fromtimestamp((base + 60_000) / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            line = template.replace(b"%d", str(index).encode()).replace(b"%s", ts.encode())
            index += 1
            yield line, None


CORRUPTIONS = ("flip", "partial_flip", "shuffle")


def corrupt_labels(events: list, kind: str, rng: random.Random, fraction: float = 0.4) -> list:
    """Copies of ``events`` (dicts with a ``label``) with the labels corrupted, features untouched:
    ``flip`` inverts every label, ``partial_flip`` inverts a random ``fraction`` of them, ``shuffle``
    permutes the labels among the rows (same label rate, no relation to the features left)."""
    out = [dict(ev) for ev in events]
    if kind == "flip":
        for ev in out:
            ev["label"] = 1 - ev["label"]
    elif kind == "partial_flip":
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must lie strictly between 0 and 1, not {fraction!r}")
        for i in rng.sample(range(len(out)), int(round(fraction * len(out)))):
            out[i]["label"] = 1 - out[i]["label"]
    elif kind == "shuffle":
        labels = [ev["label"] for ev in out]
        rng.shuffle(labels)
        for ev, label in zip(out, labels):
            ev["label"] = label
    else:
        raise ValueError(f"unknown label corruption {kind!r}; use one of {', '.join(CORRUPTIONS)}")
    return out


def drift_stream(start: dt.datetime, hours: int, rows_per_hour: int, *, change_every: int = 0, seed: int = 7,
                 first_hour: int = 0, first_index: Optional[int] = None,
                 corrupt: Optional[dict] = None, fraction: float = 0.4) -> Iterator[tuple[bytes, dict]]:
    """Clean events (no malformed lines) of hours ``first_hour .. first_hour + hours - 1`` counted
    from ``start``, one window each, whose concept changes abruptly every ``change_every`` hours
    (0: never): hour h follows concept ``(h // change_every) % CONCEPTS``. The feature
    distributions never change, so only the label relation does.

    ``corrupt``: {hour: kind} corrupts that hour's labels after drawing them (``corrupt_labels``).
    Each hour draws from its own seed, so a block generated alone equals the same hours generated
    with the rest of the stream: a scheduler's block-by-block backfill sees the same data.
    """
    start_ms = int(start.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
    corrupt = corrupt or {}
    for hour in range(first_hour, first_hour + hours):
        rng = random.Random(seed * 1_000_003 + hour)
        concept = (hour // change_every) % CONCEPTS if change_every else 0
        base = start_ms + hour * 3_600_000
        index = (hour * rows_per_hour if first_index is None else first_index + (hour - first_hour) * rows_per_hour)
        events = [event(rng, index + i, base + rng.randrange(3_600_000), concept=concept)
                  for i in range(rows_per_hour)]
        if hour in corrupt:
            events = corrupt_labels(events, corrupt[hour], rng, fraction)
        for ev in events:
            yield json.dumps(ev, sort_keys=True).encode(), ev


def write_jsonl(out_dir: str, lines, per_file_hours: int = 1, rows_per_hour: int = 1) -> GenStats:
    """Write generated lines to ``out_dir/events-<n>.jsonl`` files; returns the counts."""
    os.makedirs(out_dir, exist_ok=True)
    stats = GenStats()
    handle = None
    count = 0
    file_index = 0
    for line, ev in lines:
        if handle is None:
            handle = open(os.path.join(out_dir, f"events-{file_index:04d}.jsonl"), "wb")
        handle.write(line + b"\n")
        if ev is None:
            stats.malformed += 1
        else:
            stats.valid += 1
            stats.valid_ids.append(ev["id"])
            if ev["humidity"] > 100:
                stats.out_of_range += 1
        count += 1
        if count >= per_file_hours * rows_per_hour:
            handle.close()
            handle = None
            count = 0
            file_index += 1
    if handle is not None:
        handle.close()
    return stats
