"""False alarms and misses of validation's label checks on the synthetic streams (docs/GATE.md).

    python bench/bench_label_checks.py [--windows 200] [--rows 600] [--seed 21]

Streams from pipeline.synthetic.drift_stream: a stationary one (concept 0 throughout) and one
whose concept changes abruptly every 4 windows (0, 1, 0, ...). Each window from the fourth on is
checked against the three before it (clean, as the reference windows of a store would be):
clean, then with its labels flipped, 40% flipped and shuffled. A false alarm is any label anomaly
on a clean window; a miss is a corrupted window with none. Prints JSON (rates per stream, per
concept for the corruptions) and the time per window's profile.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--rows", type=int, default=600, help="events per window")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()

    from core.records import Event
    from pipeline import synthetic
    from transforms.arrow import events_to_record_batch
    from transforms.label_checks import LabelCheckSettings, check_labels, label_profile

    types = {"device_id": "BYTES", "firmware": "BYTES", "temperature": "FLOAT", "vibration": "FLOAT",
             "humidity": "FLOAT", "label": "INT", "id": "BYTES", "ts": "BYTES"}
    settings = LabelCheckSettings("label", ("id", "ts"))
    day = dt.datetime(2026, 11, 27)
    profiling_s, profiles_made = 0.0, 0

    def profile(events):
        nonlocal profiling_s, profiles_made
        batch = events_to_record_batch([Event(e["id"], 0, e, "bench", str(i)) for i, e in enumerate(events)], types)
        started = time.perf_counter()
        out = label_profile(batch, settings)
        profiling_s += time.perf_counter() - started
        profiles_made += 1
        return out

    result = {"windows": args.windows, "rows": args.rows, "seed": args.seed, "settings": {
        "max_mean_shift": settings.max_mean_shift, "max_consistency_drop": settings.max_consistency_drop,
        "reference_windows": settings.reference_windows}, "streams": {}}
    for name, change_every in (("stationary", 0), ("concept_change_every_4", 4)):
        clean = {}
        for h in range(args.windows):
            events = [e for _, e in synthetic.drift_stream(day, 1, args.rows, change_every=change_every,
                                                           seed=args.seed, first_hour=h)]
            clean[h] = (events, profile(events))
        stream = {"checked": 0, "false_alarms": 0, "false_alarms_at_change": 0, "changes": 0,
                  "misses": {k: {"0": [0, 0], "1": [0, 0]} for k in synthetic.CORRUPTIONS}}
        for h in range(3, args.windows):
            refs = [(str(i), clean[i][1]) for i in (h - 1, h - 2, h - 3)]
            concept = str((h // change_every) % synthetic.CONCEPTS if change_every else 0)
            at_change = bool(change_every) and h % change_every == 0
            alarms = check_labels(clean[h][1], refs, settings)["anomalies"]
            stream["checked"] += 1
            stream["false_alarms"] += bool(alarms)
            stream["changes"] += at_change
            stream["false_alarms_at_change"] += bool(alarms) and at_change
            for kind in synthetic.CORRUPTIONS:
                import random

                bad = synthetic.corrupt_labels(clean[h][0], kind, random.Random(h))
                found = check_labels(profile(bad), refs, settings)["anomalies"]
                counts = stream["misses"][kind][concept]
                counts[0] += not found
                counts[1] += 1
        stream["false_alarm_rate"] = round(stream["false_alarms"] / stream["checked"], 4)
        stream["miss_rate"] = {k: {f"concept_{c}": (f"{m}/{n}" if n else "-") for c, (m, n) in v.items()}
                               for k, v in stream["misses"].items()}
        del stream["misses"]
        result["streams"][name] = stream
    result["profile_ms_per_window"] = round(1000 * profiling_s / profiles_made, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
