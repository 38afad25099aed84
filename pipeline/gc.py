"""``ctpipe gc``: remove what nothing references any more, by the retention rules of the config.

What can go (``retention``, pipeline/config.py, documents each rule):

- ``superseded_version``: a window version that a newer one replaced, beyond the
  ``keep_superseded_versions`` newest superseded ones, once its successor is ``superseded_after`` old;
- ``unpublished_version``: a version directory without MANIFEST.json below the window's newest
  sealed version (a crashed attempt's files, or a removal that was interrupted);
- ``run_outputs`` / ``run_scratch``: <root>/runs/<run_id>/ (results workers handed to the driver)
  and <root>/tmp/<run_id>/ (shared scratch) of runs that finished (their run record exists);
  those of runs that never finished once ``scratch_after`` old;
- ``pending_parts``: stream part files (and per-window dead-letter indexes) of sealed windows whose
  end is ``pending_parts`` behind the source's watermark;
- ``dead_letters``: dead-letter days older than ``dead_letters``; ``run_record``: run records older
  than ``run_records``;
- ``analyzer_cache``: tf.Transform analyzer-cache entries (<root>/analyzer_cache/, core/analysis_cache.py)
  of window versions that are gone, or that this collection removes; ENTRY.json goes first, so a
  half-removed entry is never trusted;
- ``driver_temp``: this machine's ctpipe process temp dirs (pipeline/tempdirs.py) whose process is
  gone, once ``scratch_after`` old.

Never removed: each window's newest version; versions in the lineage of a registry version that
an alias points at, or that the production alias pointed at and can roll back to; anything a
stream checkpoint still needs (parts of windows not sealed, a cycle in flight, its run's files);
and the scratch of unfinished runs younger than ``scratch_after``. gc holds the storage root's
lease for its whole run (docs/LEASE.md), so no writer changes the root meanwhile.

Order (a crash, kill -9 included, leaves a consistent store, and the next gc finishes the job):
unreference first, then delete. A window version loses its MANIFEST.json first (it stops being
visible at once; its remaining files are an ``unpublished_version`` to the next gc); a stream
source's checkpoint records the new ``parts_collected_before_ms`` before its parts go, so a late
record never reseals a window from part of its records; run outputs and scratch of finished runs
are referenced by nothing.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import Optional

from core import analysis_cache, layout, storage, window_store
from pipeline import tempdirs
from pipeline.checkpoint import FORMAT as CHECKPOINT_FORMAT
from pipeline.checkpoint import Checkpoint
from pipeline.config import Config
from pipeline.typed_config import parse_duration

PRODUCTION = "production"
_VERSION_DIR_RE = re.compile(f"/windows/({layout.WINDOW_ID_PATTERN})/v([0-9]+)/")
_DATE_RE = re.compile(r"^[0-9]{8}$")


@dataclass(frozen=True)
class Item:
    """One thing gc removes: ``path`` is a file or a directory (a key prefix on object stores)."""

    kind: str
    path: str
    reason: str
    first: Optional[str] = None
    """A file deleted before the rest (a version's MANIFEST.json: unpublish first)."""

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": self.path, "reason": self.reason}


# --------------------------------------------------------------------------- what is referenced


def protected_versions(config: Config) -> dict:
    """(window_id, version) -> why it is kept: the lineage of every registry version an alias
    points at, or that the production alias pointed at and could roll back to."""
    from training.registry import open_registry

    registry = open_registry(config.registry.uri)
    model = config.registry.model_name
    versions = {v.version: v for v in registry.list_versions(model)}
    wanted = {v.version: f"alias {', '.join(v.aliases)}" for v in versions.values() if v.aliases}
    for entry in registry.alias_history(model, PRODUCTION):
        wanted.setdefault(int(entry["version"]), "production history (rollback target)")
    out = {}
    for number, why in sorted(wanted.items()):
        if number in versions:
            for w in versions[number].lineage.get("windows", []):
                out[(w["window_id"], int(w["version"]))] = f"lineage of {model} v{number} ({why})"
    return out


def _age_s(now: float, path: str) -> float:
    return now - storage.modified_time(path)


def _newest_age_s(now: float, files: list) -> float:
    return min(_age_s(now, f) for f in files) if files else float("inf")


# --------------------------------------------------------------------------- planning


def _window_items(config: Config, now: float, protected: dict, kept: list) -> list:
    root, rules = config.storage.root, config.retention
    after_s = parse_duration(rules.superseded_after, key="retention.superseded_after")
    sealed: dict = {}
    for w in window_store.list_sealed(root, latest_only=False):
        sealed.setdefault(w.window_id, []).append(w)
    items = []
    for wid, versions in sorted(sealed.items()):
        versions.sort(key=lambda w: w.version)
        superseded = versions[:-1]
        keep_newest = {w.version for w in superseded[len(superseded) - rules.keep_superseded_versions:]} \
            if rules.keep_superseded_versions else set()
        for i, w in enumerate(superseded):
            successor = versions[i + 1]
            if (wid, w.version) in protected:
                kept.append({"kind": "superseded_version", "path": w.path, "reason": protected[(wid, w.version)]})
            elif w.version in keep_newest:
                kept.append({"kind": "superseded_version", "path": w.path,
                             "reason": "retention.keep_superseded_versions"})
            elif _age_s(now, storage.join(successor.path, layout.MANIFEST)) < after_s:
                kept.append({"kind": "superseded_version", "path": w.path,
                             "reason": f"superseded less than {rules.superseded_after} ago"})
            else:
                items.append(Item("superseded_version", w.path, f"superseded by v{successor.version}",
                                  first=storage.join(w.path, layout.MANIFEST)))
    # version directories without a manifest, below the newest sealed version of their window
    newest = {wid: versions[-1].version for wid, versions in sealed.items()}
    published = {(w.window_id, w.version) for vs in sealed.values() for w in vs}
    leftovers = set()
    for path in storage.glob(storage.join(layout.windows_dir(root), "*", "v*", "*")):
        match = _VERSION_DIR_RE.search(path)
        if match:
            wid, number = match.group(1), int(match.group(2))
            if (wid, number) not in published and number < newest.get(wid, 0):
                leftovers.add((wid, number))
    for wid, number in sorted(leftovers):
        items.append(Item("unpublished_version", layout.window_dir(root, wid, number),
                          f"no MANIFEST.json, below the newest sealed v{newest[wid]}"))
    return items


def _analyzer_cache_items(config: Config, removed: list) -> list:
    """Entries of the analyzer cache whose window version is not sealed, or goes in this gc."""
    root = config.storage.root
    going = set()
    for item in removed:
        match = _VERSION_DIR_RE.search(item.path.rstrip("/") + "/")
        if item.kind in ("superseded_version", "unpublished_version") and match:
            going.add((match.group(1), int(match.group(2))))
    sealed = {(w.window_id, w.version) for w in window_store.list_sealed(root, latest_only=False)} - going
    items = []
    for ckey, ekey in analysis_cache.list_entries(root):
        parsed = analysis_cache.parse_entry_key(ekey)
        if parsed is None or parsed in sealed:
            continue  # a name that is not an entry of ours is left alone
        wid, number = parsed
        why = "removed by this collection" if parsed in going else "no longer sealed"
        path = layout.analyzer_cache_entry(root, ckey, ekey)
        items.append(Item("analyzer_cache", path, f"analyzer cache of {wid} v{number}, which is {why}",
                          first=storage.join(path, analysis_cache.ENTRY)))
    return items


def _run_items(config: Config, now: float, in_flight_runs: set, running: bool, kept: list) -> list:
    root, rules = config.storage.root, config.retention
    scratch_s = parse_duration(rules.scratch_after, key="retention.scratch_after")
    by_run: dict = {}
    for base, kind in ((layout.runs_dir(root), "run_outputs"), (layout.scratch_root(root), "run_scratch")):
        prefix = base.rstrip("/") + "/"
        for path in storage.glob(prefix + "*/**"):
            run_id = path[len(prefix):].split("/", 1)[0]
            by_run.setdefault((kind, run_id), []).append(path)
    items = []
    for (kind, run_id), files in sorted(by_run.items()):
        path = layout.run_dir(root, run_id) if kind == "run_outputs" else layout.run_scratch_dir(root, run_id)
        if run_id in in_flight_runs:
            kept.append({"kind": kind, "path": path, "reason": "run of a stream cycle in flight (checkpoint)"})
        elif storage.exists(layout.run_record_path(root, run_id)):
            items.append(Item(kind, path, "the run finished (its run record exists)"))
        elif running:
            kept.append({"kind": kind, "path": path, "reason": "unfinished run while a stream holds its lock"})
        elif _newest_age_s(now, files) >= scratch_s:
            items.append(Item(kind, path, f"unfinished run, untouched for {rules.scratch_after} or more"))
        else:
            kept.append({"kind": kind, "path": path, "reason": f"unfinished run, touched within {rules.scratch_after}"})
    if rules.run_records is not None:
        max_s = parse_duration(rules.run_records, key="retention.run_records")
        for path in storage.glob(storage.join(layout.runs_dir(root), "*.json")):
            run_id = path.rsplit("/", 1)[-1][:-len(".json")]
            if run_id not in in_flight_runs and _age_s(now, path) >= max_s:
                items.append(Item("run_record", path, f"older than retention.run_records ({rules.run_records})"))
    return items


def _deadletter_items(config: Config, now: float) -> list:
    rules = config.retention
    if rules.dead_letters is None:
        return []
    max_s = parse_duration(rules.dead_letters, key="retention.dead_letters")
    base = layout.deadletter_root(config.storage.root).rstrip("/") + "/"
    days = {p[len(base):].split("/", 1)[0] for p in storage.glob(base + "*/**")}
    items = []
    for day in sorted(d for d in days if _DATE_RE.match(d)):
        end = dt.datetime.strptime(day, "%Y%m%d").replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
        if now - end.timestamp() >= max_s:
            items.append(Item("dead_letters", layout.deadletter_dir(config.storage.root, day),
                              f"dead letters of {day}, older than retention.dead_letters ({rules.dead_letters})"))
    return items


def _pending_items(config: Config, sid: str, checkpoint: Checkpoint, kept: list) -> tuple[list, Optional[int]]:
    """Part dirs of sealed windows far enough behind the watermark, and the new horizon."""
    from transforms.pending import list_parts, window_end_ms

    rules, root = config.retention, config.storage.root
    if rules.pending_parts is None or checkpoint.watermark_ms is None:
        return [], None
    horizon = checkpoint.watermark_ms - int(parse_duration(rules.pending_parts, key="retention.pending_parts") * 1000)
    sealed = set(window_store.sealed_ids(root))
    items = []
    for wid in sorted(list_parts(root, sid)):
        if window_end_ms(wid, config.window.size_s) > horizon:
            continue
        path = storage.join(layout.pending_dir(root, sid), wid)
        if wid not in sealed:
            kept.append({"kind": "pending_parts", "path": path, "reason": "window not sealed yet"})
            continue
        items.append(Item("pending_parts", path, f"window sealed and {rules.pending_parts} or more behind the "
                                                 "watermark; later records for it go to <root>/late/"))
    if checkpoint.parts_collected_before_ms is not None:
        horizon = max(horizon, checkpoint.parts_collected_before_ms)
    return items, horizon


def _driver_temp_items(config: Config, now: float) -> list:
    scratch_s = parse_duration(config.retention.scratch_after, key="retention.scratch_after")
    items = []
    for path in tempdirs.dead_process_dirs():
        if now - os.path.getmtime(path) >= scratch_s:
            items.append(Item("driver_temp", path, "temp dir of a ctpipe process that is gone"))
    return items


# --------------------------------------------------------------------------- running


def _checkpoints(root: str) -> list:
    out = []
    for path in storage.glob(storage.join(layout.checkpoints_dir(root), "*.json")):
        data = storage.read_json(path)
        if data.get("format") == CHECKPOINT_FORMAT:
            out.append((path.rsplit("/", 1)[-1][:-len(".json")], Checkpoint.from_json(data, path), path))
    return out


def _delete(item: Item) -> None:
    if item.first is not None:
        storage.delete([item.first])  # unpublish first: the version is invisible from here on
    if item.kind == "driver_temp":
        shutil.rmtree(item.path, ignore_errors=True)
    elif item.kind == "run_record":
        storage.delete([item.path])
    else:
        storage.delete_tree(item.path)


def run_gc(config: Config, dry_run: bool = False, clock=time.time, lock_timeout_s: float = 0.0) -> dict:
    """Plan and (unless ``dry_run``) carry out one collection; returns the report."""
    root = config.storage.root
    now = clock()
    kept: list = []
    skipped: list = []
    from pipeline.lease import root_lease

    # The root's lease keeps every writer out meanwhile (a stream holds it per cycle, a backfill
    # for its run, train around its push): what gc sees stays true until it is done.
    with root_lease(root, "gc", lock_timeout_s) as lock:
        sources = [(sid, checkpoint, path, False) for sid, checkpoint, path in _checkpoints(root)]
        in_flight_runs = set()
        for sid, checkpoint, _path, _running in sources:
            if checkpoint.in_flight:
                from pipeline.stream import CyclePlan, seal_run_id

                in_flight_runs.add(seal_run_id(CyclePlan.from_json(checkpoint.in_flight), sid))

        items = _window_items(config, now, protected_versions(config), kept)
        items += _analyzer_cache_items(config, items)
        items += _run_items(config, now, in_flight_runs, False, kept)
        items += _deadletter_items(config, now)
        horizons = []
        for sid, checkpoint, path, _running in sources:
            if checkpoint.in_flight:
                if config.retention.pending_parts is not None:
                    kept.append({"kind": "pending_parts", "path": layout.pending_dir(root, sid),
                                 "reason": "a cycle is in flight"})
                continue
            parts, horizon = _pending_items(config, sid, checkpoint, kept)
            if parts:
                horizons.append((checkpoint, path, horizon))
                items += parts
        items += _driver_temp_items(config, now)

        if not dry_run:
            for checkpoint, path, horizon in horizons:  # unreference the parts before they go
                lock.check()
                storage.write_json_atomic(path, checkpoint.replace(parts_collected_before_ms=horizon).to_json())
            for item in items:
                lock.check()
                _delete(item)
    return {"dry_run": dry_run, "root": root, ("would_delete" if dry_run else "deleted"): [i.to_json() for i in items],
            "kept": kept, "skipped": skipped}
