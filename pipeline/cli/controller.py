"""``ctpipe controller`` (the CT loop: policies, one leader, runs) and ``ctpipe trigger`` (a manual
training request the controller consumes). docs/CONTROLLER.md is the operator's guide."""
from __future__ import annotations

import json

from core.errors import EXIT_GATE_REJECTED, EXIT_OK, ConfigError
from pipeline.cli.common import add_command, add_lock_timeout, check_lock_timeout, emit

_EXIT_NOTE = (f"With --once, exit code {EXIT_GATE_REJECTED} means the run it started was rejected by the gate "
              "(a decision, not a failure); 5: another controller leads (waited --lock-timeout); 7: this "
              "controller lost the leader lease mid-run (nothing was published after that; rerun).")


def register(subparsers) -> None:
    p = add_command(subparsers, "controller", "watch sealed windows and train by policy (one leader among replicas)",
                    run_controller,
                    description="The continuous-training loop: look for new sealed windows, pending `ctpipe "
                                "trigger` requests and scheduled times; when a policy of controller.policies fires, "
                                "train on the rolling range (training.max_windows / window_span), gate and push. "
                                "Several replicas may run: one holds the leader lease (<root>/locks/controller.lease, "
                                "or the Kubernetes Lease of controller.lease), the others stand by and take over when it stops renewing. A run of inputs "
                                "already trained is never repeated. State: <root>/controller/state.json.",
                    epilog_note=_EXIT_NOTE)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="one check as the leader, then exit (for a scheduler: CronJob, Airflow, cron); waits up to "
                           "--lock-timeout for the leader lease")
    mode.add_argument("--status", action="store_true",
                      help="show the leader, the last decision and what is pending; changes nothing")
    p.add_argument("--checks", type=int, metavar="N",
                   help="long-running mode: stop after N checks (default: run until SIGTERM)")
    p.add_argument("--progress-dir", metavar="DIR",
                   help="training runs rewrite DIR/progress-<task>.json after every batch (as `ctpipe train`)")
    add_lock_timeout(p)

    t = add_command(subparsers, "trigger", "ask the controller for a training run (consumed at its next check)",
                    run_trigger,
                    description="Record a manual training request under <root>/controller/triggers/. The leading "
                                "controller consumes every pending request at its next check with one run (the "
                                "run record names them); a request for inputs already trained is a no-op.")
    t.add_argument("--reason", default="", help="why (kept in the request and in the run record)")


def run_trigger(args, ctx) -> int:
    from pipeline.control_loop import request_training

    doc = request_training(ctx.config.storage.root, args.reason)
    emit(args, doc, [f"training requested ({doc['id']}); the leading controller runs it at its next check"])
    return EXIT_OK


def _lines(summary: dict) -> list[str]:
    d = summary["decision"]
    lines = [f"{summary['checked_at']} leader token {summary['leader']['token']}: "
             f"{len(summary['new_windows'])} new window version(s)"]
    for f in d["fired"]:
        lines.append(f"  fired {f['policy']}: {f['reason']}")
    for w in d["waiting"]:
        lines.append(f"  waiting {w['policy']}: {w['status']}")
    run = summary.get("run") or {}
    outcome = summary["outcome"]
    if outcome in ("blessed", "rejected", "reused", "already-trained"):
        lines.append(f"  run {run.get('run_id')}: {outcome}" + (f", version v{run['version']}" if run.get("version")
                                                                else ", nothing pushed"))
    elif outcome != "no-run":
        lines.append(f"  run: {outcome}: {summary.get('error', '')}")
    fresh = summary.get("freshness") or {}
    if fresh:
        age = fresh.get("model_age_seconds")
        lines.append(f"  production: v{fresh.get('production_version')}" +
                     (f", {age / 3600:.1f} h old" if age is not None else "") +
                     f", {fresh.get('windows_behind')} window(s) behind")
    return lines


def _status(args, ctx) -> int:
    from pipeline.control_loop import leader_of, pending_triggers, read_state

    root = ctx.config.storage.root
    state = read_state(root)
    triggers, _ = pending_triggers(root, state["consumed_triggers"])
    leader = leader_of(ctx.config)
    doc = {"leader": leader, "last_decision": state["last_decision"], "last_run": state["last_run"],
           "pending": {"new_pass_windows": state["pending_pass"], "drift": state["pending_drift"],
                       "requests": triggers},
           "runs_by_outcome": state["runs_by_outcome"], "consecutive_rejections": state["consecutive_rejections"]}
    who = "none" if leader is None else (f"pid {leader.get('pid')} on {leader.get('host')} (token {leader.get('token')}, "
                                         f"{leader.get('state')})")
    lines = [f"leader lease: {who}", f"last run: {json.dumps(state['last_run'])}",
             f"pending: {len(state['pending_pass'])} new PASS window(s), {len(state['pending_drift'])} drift finding(s), "
             f"{len(triggers)} request(s)"]
    emit(args, doc, lines)
    return EXIT_OK


def run_controller(args, ctx) -> int:
    from pipeline import control_loop

    if args.status:
        return _status(args, ctx)
    if args.checks is not None and (args.once or args.checks < 1):
        raise ConfigError("--checks N needs N >= 1 and is for the long-running mode (not with --once)")
    config = ctx.config
    lock_timeout = check_lock_timeout(args)
    if args.once:
        lease = control_loop.acquire_leadership(config, lock_timeout)
        try:
            from pipeline.lease import handle_sigterm

            with handle_sigterm("controller", graceful=False):
                summary = control_loop.run_once(config, lease, lock_timeout_s=lock_timeout,
                                                progress_dir=args.progress_dir)
        finally:
            lease.release()
        if args.json:  # one line, like every check of the long-running mode (Airflow's XCom keeps the last line)
            print(json.dumps(summary, sort_keys=True, default=str), flush=True)
        else:
            emit(args, summary, _lines(summary))
        return EXIT_GATE_REJECTED if summary["outcome"] == "rejected" else EXIT_OK

    def show(summary: dict) -> None:
        if args.json:  # one JSON document per line and check
            print(json.dumps(summary, sort_keys=True, default=str), flush=True)
        else:
            print("\n".join(_lines(summary)), flush=True)

    control_loop.run_forever(config, show, lock_timeout_s=lock_timeout, progress_dir=args.progress_dir,
                             max_checks=args.checks)
    return EXIT_OK
