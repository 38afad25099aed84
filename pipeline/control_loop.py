"""The CT controller loop around the training step (pipeline/controller.py): watch sealed windows,
start a run by policy, one leader among replicas, state kept under the root.

One check (:func:`run_once`), as the leader:
1. list the sealed windows and the pending manual requests (``<root>/controller/triggers/``);
2. add what is new to the evidence the state keeps since the last run (new PASS windows, drift)
   and let the policies decide (pipeline/policies.py);
3. if one fired: choose the inputs (the rolling range of ``select_windows``) and derive the run
   id from them; a run of these inputs that already finished (its run record exists) is not
   repeated: the decision says ``already-trained``. Otherwise ``run_training`` trains, gates and
   pushes, fenced by the leader lease besides the root lease, with the policies that fired in
   its run record and lineage;
4. write the state (``<root>/controller/state.json``: what it has seen, the evidence still
   pending, when the schedule was checked, the last decision and a bounded history), fenced by
   the leader lease, then remove the requests it consumed (their ids stay in the state, so a
   crash between the two never runs them twice);
5. export the metrics: model freshness, runs by outcome, consecutive rejections.

Crash-safety: a leader killed anywhere leaves the previous state; its successor repeats the
check. The run id depends only on the inputs, so a repeated run is the same run: a model
pushed by it is found in the registry (``run_training`` reuses it), a finished run's record is
found here, and a run killed mid-training is trained again (from its BackupAndRestore state).

Leadership: ``<root>/locks/controller.lease`` (core/lock.py: conditional writes on local paths,
S3 and GCS; token + 1 on every takeover), or a Kubernetes Lease (``controller.lease``,
core/kube_lease.py). A standby waits in ``acquire`` until the holder
releases it or leaves it unrenewed for ``controller.lease_ttl``; the registry checks the lease's
token before every push and alias move, so a deposed leader that wakes up publishes nothing.
"""
from __future__ import annotations

import datetime as dt
import getpass
import importlib
import socket
import sys
import time
import uuid

from core import layout, storage, window_store
from core.errors import CtpipeError, FencedError, InputError, StorageError, TerminatedError
from core.lock import StorageLock, describe
from pipeline import metrics, policies
from pipeline.config import Config
from pipeline.typed_config import duration_ms

STATE_FORMAT = "ctpipe.controller/1"
CONSUMED_KEPT = 200
"""Ids of consumed manual requests remembered in the state (a request file that outlived its
consumption, after a crash between the state write and its removal, is recognised by them)."""

RUN_OUTCOMES = metrics.CONTROLLER_OUTCOMES
"""Outcomes of a run the controller started; ``ctpipe_controller_runs_total`` has one series each."""


# ----------------------------------------------------------------------------- leader lease


def leader_lease(config: Config) -> StorageLock:
    """The controller's leader lease (not yet taken): on the storage root, or the Kubernetes Lease
    of ``controller.lease``."""
    ttl = duration_ms(config.controller.lease_ttl) / 1000
    root = config.storage.root
    return StorageLock(root, path=config.controller.lease_path(root), command="controller",
                       heartbeat_s=ttl / 6, stale_after_s=ttl)


def leader_of(config: Config) -> dict | None:
    """The controller lease's record (who leads), None when no controller ever ran."""
    return leader_lease(config).owner()


# ----------------------------------------------------------------------------- state and triggers


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def empty_state() -> dict:
    return {"format": STATE_FORMAT, "seen": {}, "pending_pass": [], "pending_drift": [], "schedule_checked_ms": None,
            "consumed_triggers": [], "runs_by_outcome": {o: 0 for o in RUN_OUTCOMES}, "consecutive_rejections": 0,
            "last_decision": None, "last_run": None, "history": []}


def read_state(root: str) -> dict:
    """The controller's state, or an empty one when no controller ran on this root."""
    path = layout.controller_state_path(root)
    if not storage.exists(path):
        return empty_state()
    state = storage.read_json(path)
    if state.get("format") != STATE_FORMAT:
        raise StorageError(f"{path} is not a controller state ({STATE_FORMAT}); move it away to start the "
                           "controller afresh (it then treats every sealed window as new)")
    return {**empty_state(), **state}


def request_training(root: str, reason: str = "", clock=time.time) -> dict:
    """Record a manual training request for the controller (``ctpipe trigger``); returns it.

    One new file per request, written atomically under a unique name: no lease is needed, and
    requests made together are consumed together by one run."""
    now_ms = int(clock() * 1000)
    trigger_id = f"{dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    doc = {"id": trigger_id, "requested_at": _iso(now_ms), "requested_by": f"{getpass.getuser()}@{socket.gethostname()}",
           "reason": reason}
    storage.write_json_atomic(layout.trigger_path(root, trigger_id), doc)
    return doc


def pending_triggers(root: str, consumed: list) -> tuple[list, list]:
    """(pending requests sorted by id, paths of request files already consumed)."""
    pending, stale = [], []
    for path in sorted(storage.glob(storage.join(layout.trigger_dir(root), "*.json"))):
        doc = storage.read_json(path)
        (stale if doc.get("id") in consumed else pending).append(path if doc.get("id") in consumed else doc)
    return pending, stale


# ----------------------------------------------------------------------------- metrics


def export_freshness(config: Config, registry, windows, state: dict, now_s: float) -> dict:
    """Set the freshness and outcome gauges; returns them (also for the summary)."""
    model = config.registry.model_name
    production = registry.get_alias(model, "production")
    usable = [w for w in windows if w.usable_for_training]
    fresh = {"production_version": production, "model_age_seconds": None}
    newest_trained = None
    if production is not None:
        version = registry.get(model, production)
        created = dt.datetime.fromisoformat(version.created_at.replace("Z", "+00:00")).timestamp()
        fresh["model_age_seconds"] = round(max(0.0, now_s - created), 3)
        metrics.MODEL_AGE.labels(model=model).set(fresh["model_age_seconds"])
        trained = [w["window_id"] for w in version.lineage.get("windows", [])]
        newest_trained = max(trained) if trained else None
    fresh["windows_behind"] = sum(1 for w in usable if newest_trained is None or w.window_id > newest_trained)
    metrics.WINDOWS_BEHIND.labels(model=model).set(fresh["windows_behind"])
    metrics.CONSECUTIVE_REJECTIONS.labels(model=model).set(state["consecutive_rejections"])
    for outcome, count in state["runs_by_outcome"].items():
        # The counter counts every run the state ever recorded: a restarted controller (or the
        # next --once) continues from the persisted count instead of starting again at 0.
        already = _exported.get(outcome, 0)
        if count > already:
            metrics.CONTROLLER_RUNS.labels(outcome=outcome).inc(count - already)
            _exported[outcome] = count
    return fresh


_exported: dict = {}


# ----------------------------------------------------------------------------- one check


def _outcome_of(run: dict) -> str:
    if run.get("reused"):
        return "reused"
    return "blessed" if run["blessing"]["blessed"] else "rejected"


def _run_summary(run: dict) -> dict:
    keep = ("run_id", "version", "pushed", "reused", "windows", "skipped_windows", "range", "metrics",
            "baseline_version", "train_examples", "training_seconds")
    out = {k: run.get(k) for k in keep}
    out["blessed"] = bool(run.get("blessing", {}).get("blessed"))
    out["gate_checks"] = [c.get("description") for c in run.get("blessing", {}).get("checks", []) if not c.get("passed")]
    return out


def run_once(config: Config, leader: StorageLock, *, lock_timeout_s: float = 60.0, progress_dir: str | None = None,
             clock=time.time, raise_failures: bool = True) -> dict:
    """One check as the leader (module docstring); returns the decision summary (what ``--json``
    prints). ``raise_failures``: a failed training run raises after its decision is recorded
    (``--once``); the long-running loop passes False and retries at its next check."""
    from pipeline.stores import open_registry

    root = config.storage.root
    leader.check()
    now_ms = int(clock() * 1000)
    state = read_state(root)
    windows = window_store.list_sealed(root)
    seen = policies.observe(state["seen"], windows)
    pending_pass = list(state["pending_pass"]) + [k for k in seen.new_pass if k not in state["pending_pass"]]
    pending_drift = list(state["pending_drift"]) + list(seen.drifted)
    triggers, stale_triggers = pending_triggers(root, state["consumed_triggers"])
    decision = policies.decide(config.controller.policies, pending_pass, pending_drift, triggers,
                               state["schedule_checked_ms"], now_ms)
    summary = {"checked_at": _iso(now_ms), "leader": {"token": leader.token, "host": socket.gethostname()},
               "new_windows": list(seen.new), "decision": decision.to_json(), "outcome": "no-run", "run": None}
    error = None
    if decision.fire:
        trigger = {"policies": list(decision.fired), "requests": triggers, "decided_at": _iso(now_ms),
                   "controller": {"leader_token": leader.token, "host": socket.gethostname()}}
        try:  # the training step loads Beam and TensorFlow: only when a policy fired
            from core.version import code_version
            from pipeline.controller import config_hash, run_training, select_windows, training_run_id

            chosen, _skipped, fingerprint = select_windows(config)
            run_id = training_run_id(chosen, fingerprint, config_hash(config), code_version())
            record_path = layout.run_record_path(root, run_id)
            if storage.exists(record_path):
                record = storage.read_json(record_path)
                summary.update(outcome="already-trained",
                               run=dict(_run_summary(record), note="a run of these inputs finished before; "
                                                                   "nothing trained"))
            else:
                run = run_training(config, lock_timeout_s=lock_timeout_s, progress_dir=progress_dir,
                                   trigger=trigger, fence=leader)
                summary.update(outcome=_outcome_of(run), run=_run_summary(run))
        except InputError as exc:  # nothing to train on yet: keep the evidence and the requests
            summary.update(outcome="no-windows", error=str(exc))
        except (FencedError, TerminatedError):
            raise  # not leader any more / stopping: the successor repeats this check
        except Exception as exc:  # noqa: BLE001  recorded, then re-raised or retried at the next check
            summary.update(outcome="failed", error=f"{type(exc).__name__}: {exc}")
            error = exc
    ran = summary["outcome"] in ("blessed", "rejected", "reused", "already-trained")
    if decision.fire:
        state["runs_by_outcome"][summary["outcome"]] = state["runs_by_outcome"].get(summary["outcome"], 0) + 1
        if summary["outcome"] == "rejected":
            state["consecutive_rejections"] += 1
        elif summary["outcome"] in ("blessed", "reused") and summary["run"]["blessed"]:
            state["consecutive_rejections"] = 0
    state["seen"] = seen.seen
    if ran:  # the evidence and the requests were acted on
        state["pending_pass"], state["pending_drift"] = [], []
        state["consumed_triggers"] = (state["consumed_triggers"] + [t["id"] for t in triggers])[-CONSUMED_KEPT:]
        state["last_run"] = {"at": _iso(now_ms), "outcome": summary["outcome"], "policies": list(decision.fired),
                             **({"run_id": summary["run"]["run_id"], "version": summary["run"]["version"]}
                                if summary["run"] else {})}
    else:
        state["pending_pass"], state["pending_drift"] = pending_pass, pending_drift
    if ran or not decision.fire or state["schedule_checked_ms"] is None:
        state["schedule_checked_ms"] = now_ms  # a due time that was not acted on fires again next check
    state["last_decision"] = {k: summary[k] for k in ("checked_at", "decision", "outcome", "new_windows")}
    if decision.fire or seen.new:
        entry = {"at": summary["checked_at"], "outcome": summary["outcome"], "fired": list(decision.fired),
                 "run_id": (summary["run"] or {}).get("run_id"), "version": (summary["run"] or {}).get("version")}
        state["history"] = (state["history"] + [entry])[-config.controller.history:]
    state["updated_at"] = summary["checked_at"]
    state["leader"] = {"token": leader.token, "host": socket.gethostname()}
    leader.check_publish("the controller's state")
    storage.write_json_atomic(layout.controller_state_path(root), state)
    if ran:
        storage.delete([layout.trigger_path(root, t["id"]) for t in triggers] + stale_triggers)
    elif stale_triggers:
        storage.delete(stale_triggers)
    registry = open_registry(config)
    summary["freshness"] = export_freshness(config, registry, windows, state, now_ms / 1000)
    summary["pending"] = {"new_pass_windows": state["pending_pass"], "drift": state["pending_drift"],
                          "requests": [t["id"] for t in triggers] if not ran else []}
    if error is None:
        metrics.LAST_SUCCESS.labels(job="controller").set_to_current_time()
    metrics.push(config.metrics.pushgateway, "controller")
    if error is not None and raise_failures:
        raise error
    return summary


# ----------------------------------------------------------------------------- the loop


def _say(text: str) -> None:
    print(f"ctpipe controller: {text}", file=sys.stderr, flush=True)


def acquire_leadership(config: Config, timeout_s: float) -> StorageLock:
    """Take the leader lease, waiting up to ``timeout_s`` (``inf``: as a standby, until it is ours).
    SIGTERM while waiting ends the wait (TerminatedError)."""
    from pipeline.lease import stop_if_terminating

    lease = leader_lease(config)
    lease.acquire(timeout_s=timeout_s,
                  on_wait=lambda record: _say(f"standby: the leader is {describe(record)}; taking over when it "
                                              f"releases the lease or leaves it unrenewed for "
                                              f"{config.controller.lease_ttl}"),
                  on_poll=lambda: stop_if_terminating("controller, while standing by"))
    _say(f"leader (token {lease.token}) of {config.storage.root}")
    return lease


def run_forever(config: Config, on_summary, *, lock_timeout_s: float = 60.0, progress_dir: str | None = None,
                max_checks: int | None = None) -> None:
    """``ctpipe controller``: stand by until leader, then check every ``controller.poll_interval``
    until SIGTERM (TerminatedError) or a lost lease (FencedError); ``on_summary`` gets each
    check's summary. A failed run is recorded and retried at the next check."""
    from pipeline.lease import handle_sigterm, stop_if_terminating, wait_unless_terminating

    poll_s = duration_ms(config.controller.poll_interval) / 1000
    metrics.serve(config.metrics.port, config.metrics.bind)
    with handle_sigterm("controller", graceful=True):
        # The training step's modules (Beam, TensorFlow: tens of seconds) load before standing by,
        # so a replica that takes over starts training at once. `--once` loads them only when a
        # policy fires.
        importlib.import_module("pipeline.controller")
        lease = acquire_leadership(config, float("inf"))
        try:
            checks = 0
            while True:
                try:
                    on_summary(run_once(config, lease, lock_timeout_s=lock_timeout_s, progress_dir=progress_dir,
                                        raise_failures=False))
                except CtpipeError as exc:
                    if isinstance(exc, (FencedError, TerminatedError)):
                        raise
                    _say(f"check failed, retrying in {config.controller.poll_interval}: {exc}")
                checks += 1
                if max_checks is not None and checks >= max_checks:
                    return
                stop_if_terminating("controller, between checks")
                wait_unless_terminating(poll_s)
                stop_if_terminating("controller, between checks")
        finally:
            lease.release()
