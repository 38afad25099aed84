"""The layout of a storage root and the window-id format: the one place that names paths.

Every path ctpipe reads or writes under ``<root>`` is built here (shared/DESIGN.md, "Storage
layout"); nothing else joins directory names onto a root by hand:

    <root>/windows/<window_id>/v<N>/          TFRecord parts, stats.pb, anomalies.pbtxt, MANIFEST.json
    <root>/pending/<source_id>/<window_id>/   stream parts not yet sealed (kept: resealing is idempotent)
    <root>/late/<source_id>/<window_id>/      late parts under the side_output policy
    <root>/checkpoints/<source_id>.json
    <root>/deadletter/<date>/...              one layout, three producers (see ``deadletter_*``)
    <root>/schema/v<N>/schema.pbtxt
    <root>/transforms/<fingerprint>/          transform_fn/, transformed_metadata/, metadata/, COMPLETE
    <root>/transforms/CURRENT                 fingerprint the stream applies
    <root>/analyzer_cache/<cache_key>/<entry>/ tf.Transform analyzer cache of one window version (ENTRY.json last)
    <root>/runs/<run_id>.json                 run record (the driver writes it last)
    <root>/runs/<run_id>/<kind>/<name>.json   results the run's workers hand back to the driver
    <root>/tmp/<run_id>/                      scratch shared by the run's workers
    <root>/locks/root.lease                   the storage root's lease (core/lock.py; a directory locally)

Window id: the window's UTC start as ``YYYYMMDDTHHMMZ`` (``20261127T0100Z``).
"""
from __future__ import annotations

import datetime as dt
import functools
import re

from core import storage

WINDOW_ID_FORMAT = "%Y%m%dT%H%MZ"
WINDOW_ID_PATTERN = r"[0-9]{8}T[0-9]{4}Z"
"""Regular expression (no anchors) of a window id, for parsing paths."""
_WINDOW_ID_RE = re.compile(f"^{WINDOW_ID_PATTERN}$")

MANIFEST = "MANIFEST.json"
RELEASE = "RELEASE.json"
QUARANTINE = "QUARANTINE.json"
"""Written beside a sealed version's MANIFEST when the evaluation gate quarantines it after sealing
(the production model collapses on it): the manifest stays immutable, the window reads as
QUARANTINED until a RELEASE.json says a person reviewed it."""
TRANSFORM_COMPLETE = "COMPLETE"
TRANSFORM_CURRENT = "CURRENT"
ANALYZER_CACHE_ENTRY = "ENTRY.json"
"""Written last into an analyzer-cache entry (checksums of its files): only entries with it are read."""


# --------------------------------------------------------------------------- window ids


def window_start_ms(event_time_ms: int, size_s: int) -> int:
    size_ms = size_s * 1000
    return event_time_ms - event_time_ms % size_ms


@functools.lru_cache(maxsize=1 << 14)
def window_id(start_ms: int) -> str:
    """Window id: its UTC start, e.g. ``20261127T0100Z`` (the year always has 4 digits: decoding
    keeps event times within 1970..9999). Cached: every event asks for the id of its window, and
    a run has few windows."""
    start = dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.timezone.utc)
    return f"{start.year:04d}" + start.strftime(WINDOW_ID_FORMAT[2:])


def window_id_start_ms(wid: str) -> int:
    parsed = dt.datetime.strptime(wid, WINDOW_ID_FORMAT).replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


def is_window_id(text: str) -> bool:
    return bool(_WINDOW_ID_RE.match(text))


# --------------------------------------------------------------------------- windows


def windows_dir(root: str) -> str:
    return storage.join(root, "windows")


def window_dir(root: str, wid: str, version: int) -> str:
    return storage.join(root, "windows", wid, f"v{version}")


def manifest_glob(root: str, wid: str = "*") -> str:
    return storage.join(root, "windows", wid, "v*", MANIFEST)


MANIFEST_PATH_RE = re.compile(f"/windows/({WINDOW_ID_PATTERN})/v([0-9]+)/" + re.escape(MANIFEST) + "$")


# --------------------------------------------------------------------------- stream state


def checkpoint_path(root: str, sid: str) -> str:
    return storage.join(root, "checkpoints", f"{sid}.json")


def pending_dir(root: str, sid: str) -> str:
    return storage.join(root, "pending", sid)


def late_dir(root: str, sid: str) -> str:
    return storage.join(root, "late", sid)


# --------------------------------------------------------------------------- dead letters


def deadletter_dir(root: str, date: str) -> str:
    """Dead letters of one UTC date (``YYYYMMDD``)."""
    return storage.join(root, "deadletter", date)


def deadletter_run_prefix(root: str, run_id: str) -> str:
    """Prefix of a bounded run's dead-letter shards (run ids start with their UTC date)."""
    return storage.join(deadletter_dir(root, run_id[:8]), run_id)


def deadletter_range_path(root: str, sid: str, date: str, range_key: str) -> str:
    """Dead letters of one planned source range of ``ctpipe stream``."""
    return storage.join(deadletter_dir(root, date), f"stream-{sid}-{range_key}.jsonl")


def deadletter_record_path(root: str, source: str, position: str, reason: str) -> str:
    """One dead letter of the unbounded graph, named by its source position (a replay rewrites it)."""
    safe = source.replace("://", "-").replace("/", "-")
    return storage.join(deadletter_unbounded_dir(root), f"{safe}-{position}-{reason}.json")


def deadletter_unbounded_dir(root: str) -> str:
    """Where the unbounded graph writes its dead letters (one ``*.json`` file each)."""
    return storage.join(root, "deadletter", "unbounded")


# --------------------------------------------------------------------------- schema, transforms, runs, locks


def schema_path(root: str, version: int) -> str:
    return storage.join(root, "schema", f"v{version}", "schema.pbtxt")


def schema_glob(root: str) -> str:
    return storage.join(root, "schema", "v*", "schema.pbtxt")


def transform_dir(root: str, fingerprint: str) -> str:
    return storage.join(root, "transforms", fingerprint)


def transform_pointer(root: str) -> str:
    return storage.join(root, "transforms", TRANSFORM_CURRENT)


def analyzer_cache_root(root: str) -> str:
    """tf.Transform analyzer caches, one folder per cache key (core/analysis_cache.py)."""
    return storage.join(root, "analyzer_cache")


def analyzer_cache_dir(root: str, cache_key: str) -> str:
    """The entries of one cache key (same preprocessing_fn source, raw schema, tf.Transform and
    Python versions): what ``ReadAnalysisCacheFromFS`` takes as its base directory."""
    return storage.join(root, "analyzer_cache", cache_key)


def analyzer_cache_entry(root: str, cache_key: str, entry_key: str) -> str:
    """One window version's cached accumulators (``entry_key``: ``<window_id>.v<N>.<raw digest>``)."""
    return storage.join(root, "analyzer_cache", cache_key, entry_key)


def runs_dir(root: str) -> str:
    """Run records (``<run_id>.json``) and run output folders (``<run_id>/``)."""
    return storage.join(root, "runs")


def run_dir(root: str, run_id: str) -> str:
    """Every result one run's workers handed back to its driver."""
    return storage.join(root, "runs", run_id)


def scratch_root(root: str) -> str:
    return storage.join(root, "tmp")


def deadletter_root(root: str) -> str:
    return storage.join(root, "deadletter")


def checkpoints_dir(root: str) -> str:
    return storage.join(root, "checkpoints")


def run_record_path(root: str, run_id: str) -> str:
    return storage.join(root, "runs", f"{run_id}.json")


def run_output_dir(root: str, run_id: str, kind: str) -> str:
    """Results a run's workers hand back to its driver (transforms/run_outputs.py)."""
    return storage.join(root, "runs", run_id, kind)


def run_scratch_dir(root: str, run_id: str) -> str:
    """Scratch space of one run that workers share (tf.Transform temp, staging, schema stats);
    removed when the run succeeds."""
    return storage.join(root, "tmp", run_id)


def run_staging_dir(root: str, run_id: str) -> str:
    """Where a bounded run stages window content between sealing stages and spills its ingest
    chunks: ``<staging>/<window_id>/`` per window (transforms/window_parts.py,
    transforms.ingest.WindowChunks); part of the run's scratch space."""
    return storage.join(run_scratch_dir(root, run_id), "staged")


def run_schema_columns_dir(root: str, run_id: str) -> str:
    """Where the first schema's statistics pass spills its feature columns
    (transforms.schema_inference.FeatureColumns); part of the run's scratch space."""
    return storage.join(run_scratch_dir(root, run_id), "schema-columns")


def train_backup_dir(root: str) -> str:
    """Keras BackupAndRestore state of interrupted trainings (one folder per training input)."""
    return storage.join(root, "train-backup")


def lease_path(root: str, name: str = "root") -> str:
    """The lease ``name`` of ``root``; ``root`` is the one every writer of the root takes."""
    return storage.join(root, "locks", f"{name}.lease")


def controller_dir(root: str) -> str:
    """``ctpipe controller``'s own state: what it has seen, its decisions, pending triggers."""
    return storage.join(root, "controller")


def controller_state_path(root: str) -> str:
    return storage.join(root, "controller", "state.json")


def trigger_dir(root: str) -> str:
    """Training requests from ``ctpipe trigger``, one file each, removed once a run consumed them."""
    return storage.join(root, "controller", "triggers")


def trigger_path(root: str, trigger_id: str) -> str:
    return storage.join(root, "controller", "triggers", f"{trigger_id}.json")
