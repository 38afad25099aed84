"""The evaluation gate's defences against poisoned data, wired to the store and the registry.

Two steps of ``ctpipe train`` (pipeline/controller.py) call this module; the decisions themselves
are pure (training/trust.py) and docs/GATE.md explains them:

- ``screen_windows`` (before training): the production model scores the held-out split of every
  chosen window it was not trained on. A window on which it collapses is quarantined
  (QUARANTINE.json beside the window's MANIFEST, under the root's lease, with the reason and the
  numbers) and left out of this and every later run until ``ctpipe windows release``; a large but
  ordinary drop is recorded as a concept change.
- ``trusted_evaluation`` (after training): candidate and production score the held-out splits of
  the newest windows production was trained on, and an optional pinned golden set; the candidate
  must not regress there (the earlier-windows bound is waived when the screening recorded a
  concept change on the newest evaluation window).

Every worker of a multi-worker run screens (the same model on the same examples gives the same
decision), so they all train on the same windows; only the chief writes quarantines.
"""
from __future__ import annotations

import os
import socket
from typing import Optional

from core import storage, window_store
from core.window_staging import stage_windows

PRODUCTION = "production"


def past_concept_drops(registry, model_name: str) -> list:
    """Drops of production's AUC recorded at concept changes that got a blessed model through."""
    drops = []
    for version in registry.list_versions(model_name):
        if version.blessed:
            drops += [c["drop"] for c in (version.blessing.get("screening") or {}).get("concept_changes", [])
                      if c.get("drop") is not None]
    return drops


def _held_out(windows, config) -> list:
    from training.data import raw_eval_examples

    return raw_eval_examples(windows, config.id_field, config.training.eval_fraction)


def screen_windows(config, registry, windows: list, scratch: str, chief: bool, lock_timeout_s: float,
                   earlier: Optional[dict] = None) -> dict:
    """Screen ``windows`` (the chosen training windows) with the production model; returns the
    screening record: {"production_version", "reference_auc", "past_concept_drops", "windows":
    [screen_decision...], "quarantined": ["<id> v<N>"], "concept_changes": [{window, drop}],
    "skipped": reason|None}. Collapsed windows are quarantined (by the chief) before it returns.
    ``earlier``: the record of a previous call in the same run; its windows are not screened again."""
    from pipeline.lease import root_lease
    from pipeline.windows_ops import quarantine_window
    from training.evaluate import evaluate_model
    from training.trust import COLLAPSE, CONCEPT_CHANGE, screen_decision

    settings = config.gate.screening
    model_name = config.registry.model_name
    record = earlier or {"production_version": None, "reference_auc": None, "past_concept_drops": [],
                         "windows": [], "quarantined": [], "concept_changes": [], "skipped": None}
    done = {d["window"] for d in record["windows"]}
    if not settings.enabled:
        record["skipped"] = "gate.screening.enabled is false"
        return record
    production_version = registry.get_alias(model_name, PRODUCTION)
    if production_version is None:
        record["skipped"] = "no production model yet: nothing to screen with"
        return record
    production = registry.get(model_name, production_version)
    seen = {(w["window_id"], w["version"]) for w in production.lineage.get("windows", [])}
    new = [w for w in windows if (w.window_id, w.version) not in seen and not w.released
           and f"{w.window_id} v{w.version}" not in done]
    record.update(production_version=production_version, reference_auc=production.metrics.get("auc"),
                  past_concept_drops=past_concept_drops(registry, model_name))
    if not new:
        if not record["windows"]:
            record["skipped"] = f"every chosen window was seen by production v{production_version} or released"
        return record
    model_dir = os.path.join(scratch, "screen-production")
    if not os.path.isdir(model_dir):
        model_dir = registry.fetch(model_name, production_version, model_dir)
    staged = stage_windows(new, os.path.join(scratch, "screen-windows"), kinds=("raw",))
    collapsed = []
    for original, window in zip(new, staged):
        name = f"{window.window_id} v{window.version}"
        examples = _held_out([window], config)
        if len(examples) < settings.min_examples:
            record["windows"].append({"window": name, "examples": len(examples), "decision": "ok",
                                      "reasons": [f"{len(examples)} held-out examples, fewer than "
                                                  f"gate.screening.min_examples {settings.min_examples}: not screened"]})
            continue
        metrics = evaluate_model(model_dir, examples, config.label_field)
        decision = screen_decision(name, metrics["auc"], record["reference_auc"], record["past_concept_drops"],
                                   settings)
        decision.update(examples=len(examples), production_accuracy=metrics["accuracy"])
        record["windows"].append(decision)
        if decision["decision"] == COLLAPSE:
            collapsed.append((original, decision))
        elif decision["decision"] == CONCEPT_CHANGE:
            record["concept_changes"].append({"window": name, "drop": decision["drop"]})
    if collapsed and chief:
        with root_lease(config.storage.root, "train (screening)", lock_timeout_s) as lock:
            for window, decision in collapsed:
                current = window_store.latest_sealed(config.storage.root, window.window_id)
                if current is None or current.version != window.version or current.verdict == "QUARANTINED" \
                        or current.released:
                    continue  # changed meanwhile: a newer version is screened by the next run
                quarantine_window(config.storage.root, window, decision["reasons"],
                                  by=f"ctpipe train (gate screening) on {socket.gethostname()}",
                                  evidence={k: decision[k] for k in ("production_auc", "reference_auc", "drop",
                                                                     "examples", "production_accuracy")}
                                  | {"production_version": production_version},
                                  fence=lock)
    record["quarantined"] = record["quarantined"] + [f"{w.window_id} v{w.version}" for w, _ in collapsed]
    return record


def _golden_examples(pattern: str, scratch: str) -> list:
    """Serialized examples of the golden TFRecord files (object-store files copied to ``scratch``)."""
    import tensorflow as tf

    paths = storage.glob(pattern)
    if not paths:
        from core.errors import ConfigError

        raise ConfigError(f"gate.trusted.golden_examples {pattern!r} matches no file; point it at TFRecord files "
                          "of raw tf.Examples (see docs/GATE.md)")
    out = []
    for n, path in enumerate(sorted(paths)):
        local = path
        if not storage.is_local(path):
            os.makedirs(os.path.join(scratch, "golden"), exist_ok=True)
            local = os.path.join(scratch, "golden", f"{n:05d}-{os.path.basename(path)}")
            with open(local, "wb") as f:
                f.write(storage.read_bytes(path))
        compression = "GZIP" if path.endswith(".gz") else ""
        out += [bytes(x) for x in tf.data.TFRecordDataset([local], compression_type=compression).as_numpy_iterator()]
    return out


def trusted_sets(config, production_lineage: Optional[dict], scratch: str) -> list:
    """[(name, source description, serialized raw examples)] of the trusted data."""
    from training.trust import EARLIER_WINDOWS, GOLDEN

    settings = config.gate.trusted
    root = config.storage.root
    sets = []
    if production_lineage:
        wanted = [(w["window_id"], w["version"]) for w in production_lineage.get("windows", [])][-settings.windows:]
        by_key = {(w.window_id, w.version): w for w in window_store.list_sealed(root, latest_only=False)}
        chosen = []
        for key in wanted:
            window = by_key.get(key)
            current = window_store.latest_sealed(root, key[0]) if window is not None else None
            # a window quarantined since (or whose newest version is) is no longer trusted
            if window is not None and current is not None and current.usable_for_training:
                chosen.append(window)
        if chosen:
            staged = stage_windows(chosen, os.path.join(scratch, "trusted-windows"), kinds=("raw",))
            sets.append((EARLIER_WINDOWS, "held-out splits of " + ", ".join(f"{w.window_id} v{w.version}"
                                                                             for w in chosen), _held_out(staged, config)))
    golden, sources = [], []
    if settings.golden_windows:
        windows = []
        for wid in settings.golden_windows:
            window = window_store.latest_sealed(root, wid)
            if window is None:
                from core.errors import ConfigError

                raise ConfigError(f"gate.trusted.golden_windows: no sealed window {wid} under {root}; see "
                                  "`ctpipe windows list`")
            windows.append(window)
        staged = stage_windows(windows, os.path.join(scratch, "golden-windows"), kinds=("raw",))
        golden += _held_out(staged, config)
        sources.append("held-out splits of " + ", ".join(f"{w.window_id} v{w.version}" for w in windows))
    if settings.golden_examples:
        golden += _golden_examples(settings.golden_examples, scratch)
        sources.append(settings.golden_examples)
    if sources:
        sets.append((GOLDEN, " + ".join(sources), golden))
    return sets


def trusted_evaluation(config, production_dir: Optional[str], production_lineage: Optional[dict], candidate_dir: str,
                       scratch: str, screening: dict, eval_window_names: list) -> dict:
    """The trusted-data record of a blessing: {"sets": [...], "checks": [...], "passed", "waiver"}."""
    from training.evaluate import evaluate_model
    from training.trust import trusted_checks

    settings = config.gate.trusted
    if not settings.enabled:
        return {"enabled": False, "sets": [], "checks": [], "passed": True, "waiver": None}
    changed = {c["window"] for c in screening.get("concept_changes", [])}
    waiver = None
    if settings.waive_on_concept_change and any(name in changed for name in eval_window_names):
        waiver = (f"the screening recorded a concept change on the evaluation window(s) "
                  f"{', '.join(n for n in eval_window_names if n in changed)} (gate.trusted.waive_on_concept_change)")
    sets = []
    for name, source, examples in trusted_sets(config, production_lineage, scratch):
        entry = {"name": name, "source": source, "examples": len(examples), "candidate": {}, "production": None}
        if examples:
            entry["candidate"] = evaluate_model(candidate_dir, examples, config.label_field)
            if production_dir:
                entry["production"] = evaluate_model(production_dir, examples, config.label_field)
        sets.append(entry)
    result = trusted_checks(sets, settings, waiver)
    return {"enabled": True, "sets": [{k: v for k, v in s.items()} for s in sets], "checks": result["checks"],
            "passed": result["passed"], "waiver": waiver}
