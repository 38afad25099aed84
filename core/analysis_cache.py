"""tf.Transform's analyzer cache under the storage root: one entry per window version.

``ctpipe train`` with ``training.analyze_range`` analyzes the preprocessing_fn over its training
range with ``AnalyzeDatasetWithCache``, one tf.Transform dataset per window version. The
accumulators tf.Transform computes for a dataset are kept here, so a later range that shares N-1
windows reads those from cache and analyzes one window (pipeline/range_transform.py)::

    <root>/analyzer_cache/<cache_key>/<entry_key>/   tf.Transform's own files for one dataset
                                                     (MANIFEST, <n>-*-of-*.gz, METADATA-*) and
                                                     ENTRY.json, written last

Keys, so that nothing stale is ever reused:

- ``cache_key`` digests what makes accumulators comparable: the source of the preprocessing_fn's
  module and its ``module:function``, the raw schema's text, the tf.Transform and Python versions.
  A changed preprocessing_fn or schema reads another folder.
- ``entry_key`` is ``<window_id>.v<N>.<raw digest>``: the window version and a digest of the sha256s
  of its raw part files (from its manifest), so a new version (late data) or rewritten content is
  another entry. It is also the tf.Transform ``DatasetKey``.

Atomicity: tf.Transform writes a dataset's cache MANIFEST while it builds the graph, before any
data, so its own folder is never trusted as it is. The analysis writes into its scratch space; only
after the pipeline finished does ``publish_entry`` copy an entry here and write ENTRY.json (the
sha256 and size of every file) last. ``check_entry`` trusts an entry only when ENTRY.json is there,
names this key and every file matches it with nothing added: an entry cut short by a crash (kill -9
mid-copy), or altered since, is reported with a warning, left out of the cache and analyzed again;
its next publication replaces it. No TensorFlow here.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from core import layout, storage

ENTRY = layout.ANALYZER_CACHE_ENTRY
FORMAT = "ctpipe.analyzer_cache_entry/1"
ENTRY_KEY_RE = re.compile(f"^({layout.WINDOW_ID_PATTERN})\\.v([0-9]+)\\.([0-9a-f]{{12}})$")

log = logging.getLogger("ctpipe.analysis_cache")


def cache_key(preprocessing_fn: str, code_digest: str, schema_text: str, tft_version: str,
              python_version: str) -> str:
    """Digest of what makes two analyses' accumulators interchangeable (module docstring)."""
    h = hashlib.sha256()
    for part in (f"fn={preprocessing_fn}", f"code={code_digest}",
                 f"schema={hashlib.sha256(schema_text.encode()).hexdigest()}", f"tft={tft_version}",
                 f"python={python_version}"):
        h.update(part.encode() + b"\n")
    return h.hexdigest()[:16]


def raw_digest(manifest: dict) -> str:
    """Digest of a sealed window version's raw content: the sha256s of its raw part files."""
    h = hashlib.sha256()
    for f in sorted((f for f in manifest["files"] if f["kind"] == "raw"), key=lambda f: f["path"]):
        h.update(f"{f['path']}:{f['sha256']}:{f['bytes']}\n".encode())
    return h.hexdigest()


def entry_key(manifest: dict) -> str:
    """``<window_id>.v<N>.<first 12 of raw_digest>``: one window version's cache entry."""
    return f"{manifest['window_id']}.v{manifest['version']}.{raw_digest(manifest)[:12]}"


def parse_entry_key(key: str) -> Optional[tuple[str, int]]:
    """(window_id, version) of an entry key, or None for a name that is not one."""
    match = ENTRY_KEY_RE.match(key)
    return (match.group(1), int(match.group(2))) if match else None


def _files(directory: str) -> dict:
    """{relative name: {"sha256", "bytes"}} of an entry's files, the marker excluded."""
    import os

    prefix = (os.path.abspath(directory) if storage.is_local(directory) else directory).rstrip("/") + "/"
    out = {}
    for path in storage.glob(prefix + "**"):
        rel = path[len(prefix):]
        if rel == ENTRY or ".tmp-" in rel:
            continue
        data = storage.read_bytes(path)
        out[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return dict(sorted(out.items()))


def check_entry(root: str, ckey: str, ekey: str) -> Optional[str]:
    """None when the entry can be trusted; otherwise why not ("missing" when there is nothing)."""
    directory = layout.analyzer_cache_entry(root, ckey, ekey)
    marker = storage.join(directory, ENTRY)
    if not storage.exists(marker):
        if storage.glob(directory.rstrip("/") + "/**"):
            return f"no {ENTRY}: an unfinished write (a crash during publication)"
        return "missing"
    try:
        entry = storage.read_json(marker)
    except Exception as exc:  # noqa: BLE001  any unreadable marker makes the entry untrusted
        return f"{ENTRY} is unreadable ({type(exc).__name__}: {exc})"
    if entry.get("format") != FORMAT or entry.get("cache_key") != ckey or entry.get("entry_key") != ekey:
        return f"{ENTRY} names another entry ({entry.get('cache_key')}/{entry.get('entry_key')})"
    expected, actual = entry.get("files") or {}, _files(directory)
    if not expected:
        return f"{ENTRY} lists no files"
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            return f"{rel} is missing"
        if rel not in expected:
            return f"{rel} is not part of the published entry"
        if actual[rel] != expected[rel]:
            return f"{rel} does not match its recorded sha256"
    return None


@dataclass(frozen=True)
class CacheLookup:
    cached: tuple        # entry keys that can be read
    missing: tuple       # entry keys never written
    ignored: tuple       # ({"entry", "reason"}): entries found but not trusted (recomputed)


def lookup(root: str, ckey: str, ekeys: Iterable[str]) -> CacheLookup:
    """Which of ``ekeys`` the cache holds; an untrusted entry is logged as a warning and counts
    as absent (it is analyzed again and replaced)."""
    cached, missing, ignored = [], [], []
    for ekey in ekeys:
        reason = check_entry(root, ckey, ekey)
        if reason is None:
            cached.append(ekey)
        elif reason == "missing":
            missing.append(ekey)
        else:
            log.warning("analyzer cache entry %s is ignored and analyzed again: %s",
                        layout.analyzer_cache_entry(root, ckey, ekey), reason)
            ignored.append({"entry": ekey, "reason": reason})
    return CacheLookup(tuple(cached), tuple(missing), tuple(ignored))


def publish_entry(root: str, ckey: str, ekey: str, staged_dir: str, fence=None) -> str:
    """Copy tf.Transform's cache of one dataset from ``staged_dir`` into the store, ENTRY.json last;
    whatever was at the target before (an untrusted or outdated entry) is removed first. ``fence``
    (core.lock) is checked before the marker. Returns the entry's directory."""
    if parse_entry_key(ekey) is None:
        raise ValueError(f"{ekey!r} is not an analyzer cache entry key (<window_id>.v<N>.<digest>)")
    target = layout.analyzer_cache_entry(root, ckey, ekey)
    marker = storage.join(target, ENTRY)
    if storage.exists(marker):
        storage.delete([marker])  # unpublish first: a crash below leaves an entry nobody trusts
    storage.delete_tree(target)
    files = _files(staged_dir)  # what the analysis wrote: a copy that differs is never trusted
    storage.copy_tree(staged_dir, target)
    if fence is not None:
        fence.check_publish(f"analyzer cache entry {ckey}/{ekey}")
    storage.write_json_atomic(marker, {"format": FORMAT, "cache_key": ckey, "entry_key": ekey, "files": files})
    return target


def list_entries(root: str) -> list[tuple[str, str]]:
    """(cache_key, entry_key) of every entry folder under the root, trusted or not."""
    prefix = layout.analyzer_cache_root(root).rstrip("/") + "/"
    found = set()
    for path in storage.glob(prefix + "*/*/**"):
        parts = path[len(prefix):].split("/")
        if len(parts) >= 3:
            found.add((parts[0], parts[1]))
    return sorted(found)
