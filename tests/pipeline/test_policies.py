"""The controller's pure parts: cron expressions, what is new among sealed windows, which policy
fires and why, and the rolling training range (fake manifests on a local root; no Beam, no TF)."""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from core.errors import ConfigError, InputError
from pipeline import cron, policies
from pipeline.config import PoliciesConfig, config_from_dict

UTC = dt.timezone.utc
HOUR_MS = 3600_000
T0 = int(dt.datetime(2026, 11, 27, tzinfo=UTC).timestamp() * 1000)


def at(*args):
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("expr, after, expected", [
    ("*/15 * * * *", at(2026, 12, 1, 10, 7), at(2026, 12, 1, 10, 15)),
    ("0 */6 * * *", at(2026, 12, 1, 18, 0), at(2026, 12, 2, 0, 0)),
    ("30 2 * * mon-fri", at(2026, 12, 4, 3, 0), at(2026, 12, 7, 2, 30)),  # Friday after 02:30 -> Monday
    ("0 0 1 jan *", at(2026, 6, 1), at(2027, 1, 1)),
    ("0 12 13 * 5", at(2026, 12, 1), at(2026, 12, 4, 12, 0)),  # dom or dow (Vixie): Friday the 4th
    ("0 0 * * 7", at(2026, 12, 1), at(2026, 12, 6)),  # 7 is Sunday
    ("@daily", at(2026, 12, 1, 0, 0), at(2026, 12, 2)),
    ("5-10/5 1,3 * * *", at(2026, 12, 1, 1, 5), at(2026, 12, 1, 1, 10)),
])
def test_next_after(expr, after, expected):
    assert cron.next_after(cron.parse(expr), after) == expected


def test_an_expression_that_never_matches_has_no_next_time():
    assert cron.next_after(cron.parse("0 0 30 2 *"), at(2026, 1, 1)) is None


@pytest.mark.parametrize("expr, named", [("61 * * * *", "minute '61'"), ("* * *", "3 fields"),
                                         ("*/0 * * * *", "step '0'"), ("0 0 * foo *", "'foo'"),
                                         ("5-1 * * * *", "'5-1'")])
def test_bad_expressions_name_the_field(expr, named):
    with pytest.raises(ConfigError, match="controller.policies.schedule") as err:
        cron.parse(expr)
    assert named in str(err.value)
    with pytest.raises(ConfigError, match=r"controller\.policies\.schedule"):
        config_from_dict({"controller": {"policies": {"schedule": expr}}})


class W:
    def __init__(self, wid, version=1, verdict="PASS", drift=None, released=False, start_ms=0, schema=1):
        self.window_id, self.version = wid, version
        self.manifest = {"validation": {"verdict": verdict}, "quality": {"drift": drift} if drift else {},
                         "start_ms": start_ms, "end_ms": start_ms + HOUR_MS, "schema_version": schema}
        self.verdict = verdict
        self.usable_for_training = verdict != "QUARANTINED" or released


def test_observe_counts_new_versions_and_drift_of_usable_windows_only():
    drift = {"against": "a", "features": {"t": {"metric": "js", "score": 0.3, "threshold": 0.1},
                                          "h": {"metric": "js", "score": 0.05, "threshold": 0.1}}}
    windows = [W("a"), W("b", 2, "WARN", drift), W("c", verdict="QUARANTINED", drift=drift), W("d")]
    seen = policies.observe({"a": 1, "b": 1}, windows)
    assert seen.new == ("b v2", "c v1", "d v1") and seen.new_pass == ("d v1",)
    assert seen.drifted == ({"window": "b v2", "against": "a",
                             "features": [{"feature": "t", "metric": "js", "score": 0.3, "threshold": 0.1}]},)
    assert seen.seen == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert policies.observe(seen.seen, windows).new == ()


def test_each_policy_fires_for_its_reason_and_says_how_far_the_others_are():
    now = int(at(2026, 12, 1, 12, 1).timestamp() * 1000)
    quiet = PoliciesConfig(new_windows=3, drift=True, schedule="0 12 * * *")
    d = policies.decide(quiet, ["a v1", "b v1"], [], [], now - 30_000, now)  # checked after 12:00
    assert not d.fire and [w["policy"] for w in d.waiting] == ["new_windows", "drift", "schedule"]
    assert d.waiting[0]["status"] == "2 of 3 new PASS window(s) since the last run"
    assert d.waiting[2]["status"] == "next at 2026-12-02T12:00:00Z"

    d = policies.decide(quiet, ["a v1", "b v1", "c v1"], [], [], now - 30_000, now)
    assert d.fire and [f["policy"] for f in d.fired] == ["new_windows"] and "c v1" in d.fired[0]["reason"]

    drift = [{"window": "c v1", "against": "b", "features": [{"feature": "t", "metric": "js", "score": 0.3,
                                                              "threshold": 0.1}]}]
    d = policies.decide(quiet, [], drift, [{"requested_by": "ops@h", "reason": "relabel"}], now - 120_000, now)
    assert [f["policy"] for f in d.fired] == ["manual", "drift", "schedule"]
    assert "ops@h: relabel" in d.fired[0]["reason"] and "t js 0.300 > 0.1" in d.fired[1]["reason"]
    assert d.schedule_due == "2026-12-01T12:00:00Z"

    # never checked before: a past scheduled time does not fire; policies switched off stay silent
    d = policies.decide(PoliciesConfig(new_windows=None, drift=False, schedule="0 12 * * *"), ["a v1"], drift, [],
                        None, now)
    assert not d.fire and [w["policy"] for w in d.waiting] == ["schedule"]


def _manifest(root, wid, start_ms, verdict="PASS", schema=1, version=1):
    path = os.path.join(root, "windows", wid, f"v{version}")
    os.makedirs(path)
    with open(os.path.join(path, "MANIFEST.json"), "w") as handle:
        json.dump({"window_id": wid, "version": version, "validation": {"verdict": verdict},
                   "schema_version": schema, "transform_fingerprint": "fp", "start_ms": start_ms,
                   "end_ms": start_ms + HOUR_MS, "content_digest": wid}, handle)


def test_the_rolling_range_by_count_and_by_span_says_what_it_left_out(tmp_path):
    from core.layout import window_id
    from pipeline.controller import select_windows, training_range

    root = str(tmp_path / "store")
    for hour in range(6):
        _manifest(root, window_id(T0 + hour * HOUR_MS), T0 + hour * HOUR_MS,
                  verdict="QUARANTINED" if hour == 4 else "PASS")
    ids = [window_id(T0 + h * HOUR_MS) for h in range(6)]
    config = config_from_dict({"storage": {"root": root}, "training": {"max_windows": 4}})
    chosen, skipped, _ = select_windows(config)
    assert [w.window_id for w in chosen] == [ids[1], ids[2], ids[3], ids[5]]
    assert {s["window"]: s["reason"] for s in skipped} == {f"{ids[4]} v1": "quarantined",
                                                           f"{ids[0]} v1": "older than training.max_windows"}
    config = config_from_dict({"storage": {"root": root}, "training": {"max_windows": 4, "window_span": "3h"}})
    chosen, skipped, _ = select_windows(config)
    assert [w.window_id for w in chosen] == [ids[3], ids[5]]  # start within 3 h of the newest window's end
    assert {s["window"]: s["reason"] for s in skipped}[f"{ids[2]} v1"] == "older than training.window_span (3h)"
    assert training_range(config, chosen) | {"rule": None} == {
        "first": ids[3], "last": ids[5], "windows": 2, "max_windows": 4, "window_span": "3h", "rule": None}


def test_no_usable_window_is_an_input_error(tmp_path):
    from pipeline.controller import select_windows

    root = str(tmp_path / "store")
    _manifest(root, "20261127T0000Z", T0, verdict="QUARANTINED")
    with pytest.raises(InputError, match="ctpipe windows release"):
        select_windows(config_from_dict({"storage": {"root": root}}))
