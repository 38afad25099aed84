"""The controller's training policies: pure functions from what it saw to whether a run starts.

``observe`` compares the sealed windows with what the controller saw before (its state,
pipeline/control_loop.py) and returns what is new: new PASS windows, new drifted windows.
``decide`` turns the pending evidence, the pending manual requests and the schedule into a
:class:`Decision`: which policies fired and why, and for those that did not, how far each is from
firing. Nothing here reads storage or a clock; the controller passes both in.

The policies (config: ``controller.policies``; docs/CONTROLLER.md):
- ``manual``: a request recorded by ``ctpipe trigger`` is pending (always on);
- ``new_windows``: at least K new PASS window versions were sealed since the last run;
- ``drift``: a newly sealed, usable window drifted from its predecessor (a feature's drift
  score in its manifest above the validation threshold);
- ``schedule``: a time of the cron expression passed since the last check.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pipeline import cron


def window_key(window) -> str:
    """``<window_id> v<version>``: how the controller names a window version."""
    return f"{window.window_id} v{window.version}"


def drifted_features(manifest: dict) -> list[dict]:
    """The features of a window whose drift score against its predecessor exceeds its threshold
    (the manifest's ``quality.drift``, written by validation), sorted by name."""
    drift = (manifest.get("quality") or {}).get("drift") or {}
    out = []
    for name, info in sorted((drift.get("features") or {}).items()):
        score, threshold = info.get("score"), info.get("threshold")
        if score is not None and threshold is not None and score > threshold:
            out.append({"feature": name, "metric": info.get("metric"), "score": score, "threshold": threshold})
    return out


@dataclass(frozen=True)
class Observation:
    """What is new among the sealed windows since the controller last looked."""

    new: tuple = ()
    """Every window version not seen before (``<id> v<N>``)."""
    new_pass: tuple = ()
    """Those with verdict PASS."""
    drifted: tuple = ()
    """``{"window", "against", "features"}`` of each new usable window that drifted."""
    seen: dict = field(default_factory=dict)
    """The newest version of every sealed window: the next state's ``seen``."""


def observe(seen: dict, windows) -> Observation:
    """Compare ``windows`` (core.window_store.SealedWindow, newest versions) with ``seen``
    (window id -> newest version the controller saw)."""
    new, new_pass, drifted = [], [], []
    for w in windows:
        if seen.get(w.window_id, 0) >= w.version:
            continue
        new.append(window_key(w))
        if w.verdict == "PASS":
            new_pass.append(window_key(w))
        features = drifted_features(w.manifest) if w.usable_for_training else []
        if features:
            against = ((w.manifest.get("quality") or {}).get("drift") or {}).get("against")
            drifted.append({"window": window_key(w), "against": against, "features": features})
    return Observation(tuple(new), tuple(new_pass), tuple(drifted),
                       {**seen, **{w.window_id: w.version for w in windows}})


@dataclass(frozen=True)
class Decision:
    fire: bool
    fired: tuple = ()
    """``{"policy", "reason"}`` of every policy that fired."""
    waiting: tuple = ()
    """``{"policy", "status"}`` of every enabled policy that did not fire."""
    schedule_due: str | None = None
    """The scheduled time (ISO, UTC) that fired, if the schedule did."""

    def to_json(self) -> dict:
        return {"fire": self.fire, "fired": list(self.fired), "waiting": list(self.waiting),
                "schedule_due": self.schedule_due}


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def decide(policies, pending_pass: list, pending_drift: list, triggers: list, schedule_checked_ms: int | None,
           now_ms: int) -> Decision:
    """Whether to start a run now.

    ``policies``: config.PoliciesConfig; ``pending_pass`` / ``pending_drift``: new PASS windows
    and drift findings accumulated since the last run; ``triggers``: pending manual requests
    (their documents); ``schedule_checked_ms``: when the schedule was last checked (epoch ms;
    None: never, so no past time fires).
    """
    fired, waiting = [], []
    due = None
    if triggers:
        who = ", ".join(f"{t.get('requested_by', '?')}: {t.get('reason') or 'no reason given'}" for t in triggers)
        fired.append({"policy": "manual", "reason": f"{len(triggers)} pending request(s) from ctpipe trigger ({who})"})
    k = policies.new_windows
    if k is not None:
        if len(pending_pass) >= k:
            fired.append({"policy": "new_windows",
                          "reason": f"{len(pending_pass)} new PASS window(s) since the last run "
                                    f"({', '.join(pending_pass)}); controller.policies.new_windows is {k}"})
        else:
            waiting.append({"policy": "new_windows",
                            "status": f"{len(pending_pass)} of {k} new PASS window(s) since the last run"})
    if policies.drift:
        if pending_drift:
            parts = [f"{d['window']} vs {d['against']}: " + ", ".join(
                f"{f['feature']} {f['metric']} {f['score']:.3f} > {f['threshold']}" for f in d["features"])
                for d in pending_drift]
            fired.append({"policy": "drift", "reason": "drift in a new window: " + "; ".join(parts)})
        else:
            waiting.append({"policy": "drift", "status": "no new window drifted"})
    if policies.schedule is not None:
        now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.timezone.utc)
        parsed = cron.parse(policies.schedule)
        checked = (dt.datetime.fromtimestamp(schedule_checked_ms / 1000, tz=dt.timezone.utc)
                   if schedule_checked_ms is not None else now)
        nxt = cron.next_after(parsed, checked)
        if nxt is not None and nxt <= now:
            due = _iso(nxt)
            fired.append({"policy": "schedule",
                          "reason": f"scheduled time {due} passed (controller.policies.schedule {policies.schedule!r})"})
        else:
            upcoming = cron.next_after(parsed, now)
            waiting.append({"policy": "schedule",
                            "status": f"next at {_iso(upcoming)}" if upcoming else "the expression never matches"})
    return Decision(bool(fired), tuple(fired), tuple(waiting), due)
