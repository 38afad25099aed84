"""The CT controller's training step: choose windows, train, evaluate against production, push.

Run record: <root>/runs/<run_id>.json holds the inputs, every decision and the outcome.

A run's id is derived from its inputs (``training_run_id``: the chosen windows with their versions
and content digests, the transform fingerprint, the config hash and the code version) and is
stored in the pushed version's lineage. A retried ``ctpipe train`` of the same inputs (a scheduler
retrying after a failure that came after the push, e.g. a metrics export) finds that version in
the registry and trains nothing: it reports the version (the same summary, with ``reused: true``)
and the original decision, and completes an alias move the first attempt did not get to (a crash
between push and promote), unless the alias was moved away from that version since.

Multi-worker training (``TF_CONFIG`` naming several workers, e.g. one ``ctpipe train`` per
Kubernetes pod): every worker selects the same windows, fetches the same production weights and
trains; only the chief (TF_CONFIG's ``chief`` task, else ``worker`` 0) evaluates, gates, pushes
and writes the run record. The other workers export to a scratch directory (saving is collective
under MultiWorkerMirroredStrategy) and return an outcome with ``role: worker``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time

from core import layout, storage, window_store
from core.errors import ConfigError, InputError
from core.transform_store import current_transform, transform_dir, verify_copy
from core.version import code_version
from core.window_staging import stage_windows
from pipeline import metrics
from pipeline.backfill import write_run_record
from pipeline.config import Config, to_dict
from pipeline.lease import Fences as _Fences
from pipeline.typed_config import duration_ms

PRODUCTION = "production"


def config_hash(config: Config) -> str:
    """Digest of the configuration a model depends on; the ``controller`` section (when runs start,
    not what they train) is left out, so a policy change does not make the same inputs a new run."""
    doc = {k: v for k, v in to_dict(config).items() if k != "controller"}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_run_id(windows, fingerprint: str, chash: str, version: str) -> str:
    """``train-<digest>`` of a training run's inputs: equal inputs, equal id."""
    doc = {"windows": [[w.window_id, w.version, w.manifest["content_digest"]] for w in windows],
           "transform_fingerprint": fingerprint, "config_hash": chash, "code_version": version}
    return "train-" + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def version_of_run(registry, model_name: str, run_id: str):
    """The registry's version pushed by run ``run_id`` (its lineage names it), else None."""
    for version in registry.list_versions(model_name):
        if version.lineage.get("run_id") == run_id:
            return version
    return None


def _finish_promotion(registry, model_name: str, version) -> bool:
    """Point production at a blessed ``version`` whose push was never followed by the alias move
    (it is not, and never was, what the alias points at); True when it moved the alias."""
    if not version.blessed or registry.get_alias(model_name, PRODUCTION) == version.version:
        return False
    moved_before = {int(e["version"]) for e in registry.alias_history(model_name, PRODUCTION)}
    moved_before |= {int(e["from"]) for e in registry.alias_rollbacks(model_name, PRODUCTION)}
    if version.version in moved_before:
        return False  # it was production and was moved away since (a rollback): leave it
    registry.promote(model_name, version.version, alias=PRODUCTION,
                     reason=f"blessed by run {version.lineage.get('run_id')} (alias move completed on retry)")
    return True


def reused_outcome(registry, model_name: str, version, chief: bool, task: str) -> dict:
    """The summary of a run whose inputs were already trained on and pushed as ``version``."""
    lineage = version.lineage
    training = lineage.get("training", {})
    promoted = _finish_promotion(registry, model_name, version) if chief else False
    return {"role": "chief" if chief else "worker", "task": task, "run_id": lineage["run_id"],
            "windows": lineage["windows"], "skipped_windows": lineage.get("skipped_windows", []),
            "transform_fingerprint": lineage["transform_fingerprint"], "metrics": version.metrics,
            "baseline_version": lineage.get("baseline_version"), "blessing": version.blessing,
            "analysis": lineage.get("analysis"), "pushed": True, "version": version.version, "lineage": lineage,
            "reused": True,
            "promoted_on_reuse": promoted,
            **{k: training.get(k) for k in ("strategy", "workers", "train_examples", "warm_start",
                                            "training_seconds", "epochs", "epochs_run", "resumed_from_epoch")}}


def select_windows(config: Config, exclude=frozenset()):
    """(chosen windows, skipped [{window, reason}]) for the next candidate; ``exclude``: names
    ("<id> v<N>") the gate's screening quarantined in this run."""
    sealed = window_store.list_sealed(config.storage.root)
    skipped = [{"window": f"{w.window_id} v{w.version}", "reason": "quarantined"}
               for w in sealed if not w.usable_for_training]
    skipped += [{"window": f"{w.window_id} v{w.version}", "reason": "quarantined by the gate's screening"}
                for w in sealed if w.usable_for_training and f"{w.window_id} v{w.version}" in exclude]
    usable = [w for w in sealed if w.usable_for_training and f"{w.window_id} v{w.version}" not in exclude]
    if not usable:
        raise InputError(f"no sealed, non-quarantined windows under {config.storage.root}; run `ctpipe backfill` "
                         "or `ctpipe stream` first (or release a reviewed window: `ctpipe windows release`)")
    # One transform for the whole range: the published one (what the stream applies), or with
    # training.analyze_range the one analyzed over exactly this range. Windows
    # sealed with an earlier transform are transformed with it at training time (training/data.py);
    # windows of another schema version than the newest cannot be parsed with it and are skipped.
    fingerprint = current_transform(config.storage.root) or usable[-1].manifest["transform_fingerprint"]
    schema_version = usable[-1].manifest["schema_version"]
    chosen = [w for w in usable if w.manifest["schema_version"] == schema_version]
    skipped += [{"window": f"{w.window_id} v{w.version}", "reason": f"schema v{w.manifest['schema_version']}"
                 f" differs from the newest (v{schema_version})"} for w in usable if w not in chosen]
    if len(chosen) > config.training.max_windows:
        skipped += [{"window": f"{w.window_id} v{w.version}", "reason": "older than training.max_windows"}
                    for w in chosen[:-config.training.max_windows]]
        chosen = chosen[-config.training.max_windows:]
    if config.training.window_span is not None:  # the rolling range as a time span
        since = chosen[-1].manifest["end_ms"] - duration_ms(config.training.window_span)
        skipped += [{"window": f"{w.window_id} v{w.version}",
                     "reason": f"older than training.window_span ({config.training.window_span})"}
                    for w in chosen if w.manifest["start_ms"] < since]
        chosen = [w for w in chosen if w.manifest["start_ms"] >= since]
    if config.training.analyze_range:  # the range's own transform (pipeline/range_transform.py)
        from pipeline.range_transform import range_fingerprint

        fingerprint = range_fingerprint(config, chosen)
    return chosen, skipped, fingerprint


def training_range(config: Config, windows) -> dict:
    """What the rolling training range chose, and by which settings (for the run record)."""
    return {"first": windows[0].window_id, "last": windows[-1].window_id, "windows": len(windows),
            "max_windows": config.training.max_windows, "window_span": config.training.window_span,
            "rule": "the newest usable windows of the newest schema version, at most training.max_windows"
                    + (f", starting within training.window_span ({config.training.window_span}) of the newest"
                       " window's end" if config.training.window_span else "")}


def local_transform_dir(root: str, fingerprint: str, scratch: str) -> str:
    """A local copy of transform ``fingerprint``, verified against its checksums."""
    path = transform_dir(root, fingerprint)
    local = path if storage.is_local(path) else storage.download_tree(path, os.path.join(scratch, "transform"))
    verify_copy(local, fingerprint)
    return local


def warm_start_compatibility(config: Config, production_lineage: dict, fingerprint: str) -> dict:
    """Whether the candidate may start from production's weights: {"compatible", "reason"}.

    Same transform: yes. With ``training.analyze_range`` every range has its own transform, so a
    different one is compatible when its vocabularies (the transform's assets) are byte for byte
    production's: embeddings then index the same values; the z-score statistics only move with the
    data. The input signature is checked by the trainer as well."""
    from core.transform_store import asset_checksums

    production_fp = production_lineage.get("transform_fingerprint")
    if production_fp == fingerprint:
        return {"compatible": True, "reason": "same transform fingerprint as production"}
    if not config.training.analyze_range:
        return {"compatible": False, "reason": "production model was trained with another transform"}
    root = config.storage.root
    theirs, ours = asset_checksums(root, production_fp), asset_checksums(root, fingerprint)
    if theirs is None or ours is None:
        return {"compatible": False, "reason": f"production's transform {production_fp} is not published under "
                                               "the root with checksums: its vocabularies cannot be compared"}
    if theirs != ours:
        return {"compatible": False, "reason": f"production's transform {production_fp} has other vocabularies "
                                               "than this range's (the indexes would mean other values)"}
    return {"compatible": True, "reason": f"this range's transform has the same vocabularies as production's "
                                          f"({production_fp})"}


def backup_base_dir(config: Config) -> str:
    """The folder of BackupAndRestore state: ``training.backup_dir``, else ``<root>/train-backup``
    for a local storage root. Never the process's temporary directory, which a restarted pod loses
    (the restart would then train from the first epoch again)."""
    if config.training.backup_dir:
        return config.training.backup_dir
    root = config.storage.root
    if storage.is_local(root):
        return layout.train_backup_dir(root)
    raise ConfigError(f"training.backup_dir is not set and storage.root {root} is an object store; set "
                      "training.backup_dir to a folder that outlives the training process and that every "
                      "worker sees, e.g. a mounted persistent volume (/var/lib/ctpipe/train-backup)")


def run_training(config: Config, force_push: bool = False, progress_dir: str | None = None,
                 lock_timeout_s: float = 0.0, *, trigger: dict | None = None, fence=None, options=None) -> dict:
    """Train a candidate, gate it against production and push it if blessed (or ``force_push``);
    ``progress_dir``: every worker rewrites a progress file there after each batch. A run of
    inputs the registry already holds a version of trains nothing (module docstring).
    ``trigger``: why the run started (pipeline/control_loop.py), kept in the run record and the
    lineage; ``fence``: checked besides the root lease before every registry publish (the
    controller's leader lease: a deposed leader's push or alias move is refused); ``options``: the
    Beam options of the range analysis (``training.analyze_range``; default: from the config's
    runner_config).

    Training only reads the root (sealed windows are immutable), so it runs beside a stream or a
    backfill; the chief takes the storage root's lease (waiting up to ``lock_timeout_s``) for
    what it publishes: the push, the alias move and the run record, each fenced by the lease."""
    from pipeline.lease import root_lease
    from pipeline.screening import screen_windows
    from pipeline.stores import open_registry
    from training.strategy import is_chief, strategy_from_environment, task_name

    # Under MultiWorkerMirroredStrategy (TF_CONFIG with several workers) creating the strategy
    # configures TF's collective runtime, which must come before any TF op of this process:
    # screening below runs the production model. The trainer gets the same strategy back.
    strategy_from_environment()
    root = config.storage.root
    started = time.time()
    registry = open_registry(config)
    model_name = config.registry.model_name
    chash = config_hash(config)
    chief = is_chief()
    scratch = tempfile.mkdtemp(prefix="ctpipe-train-")
    try:
        # Windows on which production collapses are quarantined, not trained on (docs/GATE.md);
        # the range is chosen again without them (and what that adds is screened too).
        screening = None
        while True:
            excluded = frozenset(screening["quarantined"]) if screening else frozenset()
            windows, skipped, fingerprint = select_windows(config, excluded)
            screening = screen_windows(config, registry, windows, scratch, chief, lock_timeout_s, screening)
            if set(screening["quarantined"]) <= excluded:
                break
        run_id = training_run_id(windows, fingerprint, chash, code_version())
        earlier = version_of_run(registry, model_name, run_id)
        if earlier is not None:
            if not chief:
                return dict(reused_outcome(registry, model_name, earlier, chief, task_name()), screening=screening)
            with root_lease(root, "train", lock_timeout_s) as lock:  # it may finish an alias move
                registry.fenced_by(_Fences(lock, fence))
                outcome = dict(reused_outcome(registry, model_name, earlier, chief, task_name()),
                               range=training_range(config, windows), trigger=trigger, screening=screening)
                if not storage.exists(layout.run_record_path(root, run_id)):
                    lock.check()
                    write_run_record(root, run_id, dict(outcome, kind="train", started_at=started,
                                                        finished_at=time.time()))
            return outcome
        return _train(config, registry, run_id, started, windows, skipped, fingerprint, chash, chief, scratch,
                      force_push, progress_dir, lock_timeout_s, screening, trigger, fence, options)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # also after a failure: no driver temp dir left behind


def _train(config: Config, registry, run_id: str, started: float, windows, skipped, fingerprint: str, chash: str,
           chief: bool, scratch: str, force_push: bool, progress_dir: str | None, lock_timeout_s: float,
           screening: dict, trigger: dict | None = None, fence=None, options=None) -> dict:
    from pipeline.lease import root_lease
    from pipeline.screening import trusted_evaluation
    from training.data import raw_eval_examples
    from training.evaluate import evaluate_model, gate
    from training.strategy import task_name
    from training.trainer import SIGNATURE_FILE, WARMSTART_DIR, TrainSpec, backup_dir_for, train_and_export
    from transforms.preprocess import load_function

    root = config.storage.root
    chosen_range = training_range(config, windows)
    if config.training.analyze_range:
        from pipeline.range_transform import analyze_range

        with metrics.timed("analyze"):
            analysis = analyze_range(config, windows, fingerprint, options, lock_timeout_s, fence)
    else:
        analysis = {"mode": "published", "fingerprint": fingerprint,
                    "reason": "training.analyze_range is false: the published transform (CURRENT)"}
    # tf.data reads local files only (TensorFlow has no s3:// file system): windows on an object
    # store are copied to the scratch dir first, each file checked against its manifest.
    windows = stage_windows(windows, os.path.join(scratch, "windows"))
    model_name = config.registry.model_name

    production_version = registry.get_alias(model_name, PRODUCTION)
    production_dir = production_lineage = None
    if production_version is not None:
        production_dir = registry.fetch(model_name, production_version, os.path.join(scratch, "production"))
        production_lineage = registry.get(model_name, production_version).lineage

    warm_dir = warm_signature = None
    warm_why = warm_start_compatibility(config, production_lineage, fingerprint) if production_dir else None
    if production_dir and warm_why["compatible"]:
        warm_dir = os.path.join(production_dir, WARMSTART_DIR)
        sig_path = os.path.join(warm_dir, SIGNATURE_FILE)
        if os.path.exists(sig_path):
            with open(sig_path, encoding="utf-8") as handle:
                warm_signature = json.load(handle)

    backup_base = backup_base_dir(config)
    spec = TrainSpec(
        transform_dir=local_transform_dir(root, fingerprint, scratch), transform_fingerprint=fingerprint,
        label_key=config.label_field, id_field=config.id_field, event_time_field=config.event_time.field,
        eval_fraction=config.training.eval_fraction, epochs=config.training.epochs,
        batch_size=config.training.batch_size,
        backup_dir=backup_dir_for(backup_base, windows, fingerprint, chash), progress_dir=progress_dir)
    export_dir = os.path.join(scratch, "candidate")
    with metrics.timed("train"):
        facts = train_and_export(windows, spec, load_function(config.training.model_fn, "training.model_fn"), export_dir,
                                 warm_start_dir=warm_dir, warm_start_signature=warm_signature)
    if warm_dir is None:
        facts["warm_start"] = {"used": False, "reason": "no production model" if production_dir is None else
                               warm_why["reason"]}
    elif facts["warm_start"]["used"] and production_lineage.get("transform_fingerprint") != fingerprint:
        facts["warm_start"]["reason"] = warm_why["reason"] + "; same input signature"
    if not chief:
        # The chief evaluates and pushes; this worker's export only existed for the collective save.
        return {"role": "worker", "task": task_name(), "run_id": run_id, "pushed": False, "version": None,
                "reused": False,
                "windows": [{"window_id": w.window_id, "version": w.version} for w in windows],
                "transform_fingerprint": fingerprint, "baseline_version": production_version,
                **{k: v for k, v in facts.items() if k != "signature"}}

    eval_windows = windows[-config.training.eval_windows:]
    eval_examples = raw_eval_examples(eval_windows, config.id_field, config.training.eval_fraction)
    with metrics.timed("evaluate"):
        candidate_metrics = evaluate_model(export_dir, eval_examples, config.label_field, config.gate.slice_feature)
        baseline_metrics = (evaluate_model(production_dir, eval_examples, config.label_field,
                                           config.gate.slice_feature) if production_dir else None)
        eval_names = [f"{w.window_id} v{w.version}" for w in eval_windows]
        trusted = trusted_evaluation(config, production_dir, production_lineage, export_dir, scratch, screening,
                                     eval_names)
    blessing = gate(candidate_metrics, baseline_metrics, config.gate.thresholds)
    blessing["blessed"] = blessing["blessed"] and trusted["passed"]
    blessing.update({"candidate_metrics": candidate_metrics, "baseline_metrics": baseline_metrics,
                     "baseline_version": production_version, "eval_windows": eval_names,
                     "trusted": trusted, "screening": screening,
                     "forced": bool(force_push and not blessing["blessed"])})
    metrics.GATE_DECISIONS.labels(outcome="blessed" if blessing["blessed"] else "rejected").inc()

    lineage = {
        "windows": [{"window_id": w.window_id, "version": w.version,
                     "content_digest": w.manifest["content_digest"],
                     "transformed": "stored" if w.manifest["transform_fingerprint"] == fingerprint else
                     f"at training time (sealed with {w.manifest['transform_fingerprint']})"} for w in windows],
        "skipped_windows": skipped,
        "transform_fingerprint": fingerprint,
        "schema_version": windows[-1].manifest["schema_version"],
        "config_hash": chash, "code_version": code_version(), "run_id": run_id,
        "metrics": candidate_metrics,
        "eval_windows": blessing["eval_windows"],
        "training_duration_s": facts["training_seconds"],
        "warm_start": facts["warm_start"],
        "baseline_version": production_version,
        "training": {k: v for k, v in facts.items() if k != "signature"},
        "range": chosen_range, "trigger": trigger, "analysis": analysis,
    }
    outcome = {"role": "chief", "task": task_name(), "run_id": run_id, "windows": lineage["windows"],
               "skipped_windows": skipped, "transform_fingerprint": fingerprint, "metrics": candidate_metrics,
               "baseline_version": production_version, "blessing": blessing, "pushed": False, "version": None,
               "lineage": lineage, "reused": False, "range": chosen_range, "trigger": trigger,
               "screening": screening, "analysis": analysis,
               **{k: facts[k] for k in ("strategy", "workers", "train_examples", "warm_start", "training_seconds",
                                        "epochs", "epochs_run", "resumed_from_epoch")}}
    with root_lease(root, "train", lock_timeout_s) as lock:
        registry.fenced_by(_Fences(lock, fence))
        if blessing["blessed"] or force_push:
            earlier = version_of_run(registry, model_name, run_id)
            if earlier is not None:  # an overlapping attempt of the same inputs pushed meanwhile
                return dict(reused_outcome(registry, model_name, earlier, chief, task_name()),
                            range=chosen_range, trigger=trigger)
            version = registry.push(model_name, export_dir, metrics=candidate_metrics, lineage=lineage,
                                    blessing=blessing)
            outcome.update(pushed=True, version=version.version)
            metrics.MODELS_PUSHED.labels(model=model_name).inc()
            for name in ("auc", "accuracy", "log_loss", "example_count"):
                metrics.MODEL_METRIC.labels(model=model_name, version=str(version.version), metric=name).set(
                    candidate_metrics[name])
            if blessing["blessed"]:
                registry.promote(model_name, version.version, alias=PRODUCTION, reason=f"blessed by run {run_id}")
        lock.check()
        if fence is not None:
            fence.check_publish(f"run record {run_id}")
        write_run_record(root, run_id, dict(outcome, kind="train", started_at=started, finished_at=time.time()))
    if blessing["blessed"]:
        metrics.LAST_SUCCESS.labels(job="train").set_to_current_time()
    return outcome
