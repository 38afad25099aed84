"""False alarms and misses of validation's label checks on the synthetic streams (docs/GATE.md).

    python bench/bench_label_checks.py [--windows 200] [--rows 600] [--seed 21] [--shift-every 25]

Streams: from pipeline.synthetic.drift_stream, a stationary one (concept 0 throughout) and one
whose concept changes abruptly every 4 windows (0, 1, 0, ...); and a feature-drift one (concept
0, pipeline.synthetic.event) whose temperature mean moves by +15 and back every ``--shift-every``
windows, which moves the label's positive rate for good (about 0.4 -> 0.7).

Each window is checked as a store would check it: its references are chosen among the clean
windows before it (transforms.label_checks.choose_references), a window whose clean version is
flagged by a label check becomes unusable for training (both kinds block by default), and a
window where the temperature shifts is a drift window (the validator's drift check flags a +15
shift, tests/transforms/test_drift.py; here it is marked by construction): QUARANTINED, and the
start of a regime. Two rules are compared: ``regime`` (the references follow regimes) and
``nearest`` (the nearest usable windows whatever drifted: the rule before regimes). Each window
is also checked with its labels flipped, 40% flipped and shuffled (never a reference). A false
alarm is any label anomaly on a clean window; a miss is a corrupted window with none. Prints
JSON (rates per stream and rule, per concept for the corruptions, and the windows with no rate
check: the first usable window of each regime) and the time per window's profile.
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
    parser.add_argument("--shift-every", type=int, default=25, help="windows between temperature shifts")
    args = parser.parse_args()

    import random

    from core.records import Event
    from pipeline import synthetic
    from transforms.arrow import events_to_record_batch
    from transforms.label_checks import Candidate, LabelCheckSettings, check_labels, choose_references, label_profile

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

    def shifted_hour(h, shift):
        rng = random.Random(args.seed * 1_000_003 + h)
        base = int((day + dt.timedelta(hours=h)).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
        return [synthetic.event(rng, h * args.rows + i, base + rng.randrange(3_600_000), mean_shift=shift)
                for i in range(args.rows)]

    streams = {
        "stationary": lambda h: ([e for _, e in synthetic.drift_stream(day, 1, args.rows, seed=args.seed,
                                                                        first_hour=h)], "0", False),
        "concept_change_every_4": lambda h: ([e for _, e in synthetic.drift_stream(
            day, 1, args.rows, change_every=4, seed=args.seed, first_hour=h)], str((h // 4) % synthetic.CONCEPTS),
            False),
        f"temperature_shift_every_{args.shift_every}": lambda h: (
            shifted_hour(h, 15.0 * ((h // args.shift_every) % 2)), str((h // args.shift_every) % 2),
            h > 0 and h % args.shift_every == 0),
    }
    result = {"windows": args.windows, "rows": args.rows, "seed": args.seed, "settings": {
        "max_mean_shift": settings.max_mean_shift, "max_consistency_drop": settings.max_consistency_drop,
        "reference_windows": settings.reference_windows}, "streams": {}}
    drift_mark = (("temperature", 1.0, settings.max_mean_shift),)
    for name, make in streams.items():
        windows = []
        for h in range(args.windows):
            events, group, drifted = make(h)
            windows.append((f"w{h:05d}", events, profile(events), group, drifted))
        result["streams"][name] = {}
        for rule in ("regime", "nearest"):
            history = []  # Candidates, newest last
            out = {"checked": 0, "false_alarms": 0, "rate_not_checked": 0,
                   "misses": {k: {} for k in synthetic.CORRUPTIONS},
                   "missed_without_rate_check": {k: 0 for k in synthetic.CORRUPTIONS}}
            for h, (wid, events, prof, group, drifted) in enumerate(windows):
                own = drift_mark if drifted and rule == "regime" else ()
                earlier = [Candidate(c.window_id, c.profile, c.usable, c.drift if rule == "regime" else ())
                           for c in reversed(history)]
                chosen = choose_references(wid, own, None, iter(earlier), settings)
                clean = check_labels(prof, chosen, settings)
                history.append(Candidate(wid, prof, not drifted and not clean["anomalies"], drift_mark if drifted else ()))
                if drifted or clean["skipped"]:
                    continue  # a drift window is QUARANTINED whatever its labels; the first window is not checked
                out["checked"] += 1
                out["false_alarms"] += bool(clean["anomalies"])
                no_rate = "positive_rate" not in clean["reference"]
                out["rate_not_checked"] += no_rate
                for kind in synthetic.CORRUPTIONS:
                    bad = synthetic.corrupt_labels(events, kind, random.Random(h))
                    found = check_labels(profile(bad), chosen, settings)["anomalies"]
                    counts = out["misses"][kind].setdefault(group, [0, 0])
                    counts[0] += not found
                    counts[1] += 1
                    out["missed_without_rate_check"][kind] += no_rate and not found
            out["false_alarm_rate"] = round(out["false_alarms"] / max(1, out["checked"]), 4)
            out["miss_rate"] = {k: {f"group_{g}": f"{m}/{n}" for g, (m, n) in sorted(v.items())}
                                for k, v in out["misses"].items()}
            del out["misses"]
            result["streams"][name][rule] = out
    result["profile_ms_per_window"] = round(1000 * profiling_s / profiles_made, 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
