"""The sealed-window store: layout, listing, manifests. Only sealed windows are visible.

A window version directory is ``<root>/windows/<window_id>/v<N>/``; it is sealed when its
MANIFEST.json exists (written last). Part files without a manifest belong to a crashed attempt and
are invisible; the next attempt writes the same deterministic names over them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from core import storage
from core.errors import ConfigError, StorageError
from core.layout import MANIFEST, QUARANTINE, RELEASE, is_window_id, manifest_glob, window_dir
from core.layout import MANIFEST_PATH_RE as _VERSION_RE

__all__ = ["MANIFEST", "QUARANTINE", "RELEASE", "SealedWindow", "latest_sealed", "list_sealed", "previous_sealed", "sealed_ids", "window_dir"]


@dataclass(frozen=True)
class SealedWindow:
    window_id: str
    version: int
    path: str
    manifest: dict

    @property
    def verdict(self) -> str:
        """The validation verdict, or QUARANTINED when the evaluation gate quarantined the window
        after sealing (QUARANTINE.json beside the manifest)."""
        if self.manifest.get("_quarantine"):
            return "QUARANTINED"
        return self.manifest["validation"]["verdict"]

    @property
    def reasons(self) -> list:
        """Why the window has its verdict: validation's reasons, then the gate's."""
        gate = self.manifest.get("_quarantine") or {}
        return list(self.manifest["validation"].get("reasons", [])) + list(gate.get("reasons", []))

    @property
    def released(self) -> bool:
        return bool(self.manifest.get("_release"))

    @property
    def usable_for_training(self) -> bool:
        return self.verdict != "QUARANTINED" or self.released

    def file_paths(self, kind: str) -> list[str]:
        return [storage.join(self.path, f["path"]) for f in self.manifest["files"] if f["kind"] == kind]


def _load(root: str, path: str) -> SealedWindow:
    match = _VERSION_RE.search(path)
    manifest = storage.read_json(path)
    base = path[: -len(MANIFEST) - 1]
    release_path = storage.join(base, RELEASE)
    if storage.exists(release_path):
        manifest = dict(manifest, _release=storage.read_json(release_path))
    quarantine_path = storage.join(base, QUARANTINE)
    if storage.exists(quarantine_path):
        manifest = dict(manifest, _quarantine=storage.read_json(quarantine_path))
    if manifest.get("window_id") != match.group(1) or manifest.get("version") != int(match.group(2)):
        raise StorageError(f"{path}: manifest names window {manifest.get('window_id')} "
                           f"v{manifest.get('version')}, not its own directory; the store is corrupt")
    return SealedWindow(match.group(1), int(match.group(2)), base, manifest)


def list_sealed(root: str, latest_only: bool = True) -> list[SealedWindow]:
    """Sealed windows sorted by id (and version); by default only each window's newest version."""
    paths = [p for p in storage.glob(manifest_glob(root)) if _VERSION_RE.search(p)]
    windows = sorted((_load(root, p) for p in paths), key=lambda w: (w.window_id, w.version))
    if not latest_only:
        return windows
    latest: dict[str, SealedWindow] = {}
    for window in windows:
        latest[window.window_id] = window
    return [latest[k] for k in sorted(latest)]


def check_window_id(wid: str) -> str:
    """``wid`` if it is a window id; a ConfigError otherwise (ids reach globs and paths, so a
    ``*`` or ``../`` from a command line must never get that far)."""
    if not isinstance(wid, str) or not is_window_id(wid):
        raise ConfigError(f"{wid!r} is not a window id; window ids are the window's UTC start as "
                          "YYYYMMDDTHHMMZ, e.g. 20261127T0100Z (see `ctpipe windows list`)")
    return wid


def latest_sealed(root: str, wid: str) -> Optional[SealedWindow]:
    check_window_id(wid)
    versions = [p for p in storage.glob(manifest_glob(root, wid)) if _VERSION_RE.search(p)]
    if not versions:
        return None
    return max((_load(root, p) for p in versions), key=lambda w: w.version)


def sealed_ids(root: str) -> list[str]:
    """Ids of the windows with at least one sealed version (from paths only: nothing is read)."""
    ids = {m.group(1) for p in storage.glob(manifest_glob(root)) if (m := _VERSION_RE.search(p))}
    return sorted(ids)


def previous_sealed(root: str, wid: str) -> Optional[SealedWindow]:
    """Newest version of the latest sealed window that starts before ``wid``."""
    earlier = [i for i in sealed_ids(root) if i < wid]
    return latest_sealed(root, earlier[-1]) if earlier else None
