"""``ctpipe train``: train on sealed windows, evaluate against production, push if blessed."""
from __future__ import annotations

from core.errors import EXIT_GATE_REJECTED, EXIT_OK
from pipeline.cli.common import add_command, add_lock_timeout, check_lock_timeout, emit


def register(subparsers) -> None:
    p = add_command(subparsers, "train", "train on sealed windows, evaluate against production, push if blessed",
                    run, description="Train a candidate on the newest sealed, non-quarantined windows, evaluate "
                                     "it and the production model on held-out examples, and push it (moving "
                                     "the production alias) only if the gate blesses it. Under TF_CONFIG with "
                                     "several workers, run one `ctpipe train` per worker: the chief pushes.",
                    epilog_note=f"Exit code {EXIT_GATE_REJECTED} is a decision (model not blessed), not a failure.")
    p.add_argument("--force", action="store_true", help="push even if the gate rejects (recorded in lineage)")
    p.add_argument("--progress-dir", metavar="DIR",
                   help="rewrite DIR/progress-<task>.json (epoch, batch, state, pid) after every batch, so an "
                        "operator or a test can watch training")
    add_lock_timeout(p)


def run(args, ctx) -> int:
    from pipeline import metrics
    from pipeline.controller import run_training

    config = ctx.config
    outcome = run_training(config, force_push=args.force, progress_dir=args.progress_dir,
                           lock_timeout_s=check_lock_timeout(args),
                           options=ctx.options if config.training.analyze_range else None)
    # The chief's push is the run's (gate decision, model metrics); other workers push to a group of
    # their own, so they never replace it.
    metrics.push(config.metrics.pushgateway, "train",
                 {"task": outcome["task"]} if outcome["role"] == "worker" else None)
    screened = screening_lines(outcome.get("screening"))
    if outcome.get("reused"):
        decision = "blessed" if outcome["blessing"]["blessed"] else "not blessed, pushed with --force"
        lines = screened + [f"reused: run {outcome['run_id']} already trained on these inputs and pushed "
                            f"{config.registry.model_name} v{outcome['version']} ({decision}); nothing trained"]
        if outcome["promoted_on_reuse"]:
            lines.append(f"production -> v{outcome['version']} (the first attempt stopped before moving the alias)")
        emit(args, outcome, lines)
        if outcome["role"] == "worker":
            return EXIT_OK
        return EXIT_OK if outcome["blessing"]["blessed"] else EXIT_GATE_REJECTED
    if outcome["role"] == "worker":  # multi-worker training: the chief evaluates and pushes
        emit(args, outcome, [f"worker {outcome['task']}: trained {outcome['epochs_run']} epochs "
                             f"({outcome['train_examples']} examples, {outcome['strategy']}); "
                             "the chief evaluates and pushes"])
        return EXIT_OK
    lines = screened + analysis_lines(outcome.get("analysis")) + [f"candidate trained on {len(outcome['windows'])} windows ({outcome['train_examples']} examples, "
             f"{outcome['strategy']}, warm start: {outcome['warm_start']['used']})",
             "metrics: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in sorted(outcome["metrics"].items()) if k != "slices")]
    for check in outcome["blessing"]["checks"]:
        lines.append(f"  {'ok  ' if check['passed'] else 'FAIL'} {check['description']}")
    for check in (outcome["blessing"].get("trusted") or {}).get("checks", []):
        mark = "----" if not check["applied"] else "ok  " if check["passed"] else "FAIL"
        lines.append(f"  {mark} trusted data, {check['description']}")
    if outcome["pushed"] and outcome["blessing"]["blessed"]:
        lines.append(f"blessed: pushed {config.registry.model_name} v{outcome['version']}; production -> "
                     f"v{outcome['version']}")
    elif outcome["pushed"]:
        lines.append(f"not blessed, pushed anyway (--force) as {config.registry.model_name} v{outcome['version']}; "
                     "production alias unchanged")
    else:
        lines.append("not blessed: nothing pushed, production alias unchanged")
    emit(args, outcome, lines)
    return EXIT_OK if outcome["blessing"]["blessed"] else EXIT_GATE_REJECTED


def screening_lines(screening) -> list:
    """What the gate's screening quarantined or recorded, one line each (docs/GATE.md)."""
    if not screening:
        return []
    return [f"screening: {d['decision']}: {reason}" for d in screening.get("windows", [])
            if d.get("decision") in ("collapse", "concept_change") for reason in d.get("reasons", [])]


def analysis_lines(analysis) -> list:
    """What the range analysis (training.analyze_range) analyzed and read from cache, one line."""
    if not analysis or analysis.get("mode") != "training_range":
        return []
    line = (f"transform {analysis['fingerprint']} over the training range: {analysis['analyzed']} window(s) "
            f"analyzed, {analysis['from_cache']} from the analyzer cache")
    if analysis.get("note"):
        line += f" ({analysis['note']})"
    ignored = [f"  ignored cache entry {e['entry']}: {e['reason']}" for e in analysis.get("ignored_entries", [])]
    return [line] + ignored
