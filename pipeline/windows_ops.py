"""Reviewing sealed windows, without the command line (``ctpipe windows`` is pipeline/cli/windows.py).

The evaluation gate quarantines a window after sealing with QUARANTINE.json beside its MANIFEST
(``quarantine_window``). Releasing writes RELEASE.json (who, why, when, verdict at release) beside the MANIFEST of the
window's newest version; training uses a QUARANTINED window only when it has one
(SealedWindow.usable_for_training). A release is never overwritten: a new version of the window
needs its own review.
"""
from __future__ import annotations

import datetime as dt

from core import storage, window_store
from core.errors import ConfigError, StorageError


def release_window(root: str, window_id: str, reason: str, by: str, now: dt.datetime | None = None,
                   fence=None) -> dict:
    """Record the release of ``window_id``'s newest version (it must be QUARANTINED and not yet
    released); returns the record written. ``fence``: the root's lease (core.lock), checked
    before the write."""
    if not reason or not reason.strip():
        raise ConfigError("--reason: say why the window is safe to use (it is recorded with the release)")
    window = window_store.latest_sealed(root, window_id)
    if window is None:
        raise StorageError(f"no sealed window {window_id!r} under {root}; see `ctpipe windows list`")
    if window.released:
        raise StorageError(f"window {window_id} v{window.version} was already released by "
                           f"{window.manifest['_release']['by']} at {window.manifest['_release']['at']}")
    if window.verdict != "QUARANTINED":
        raise StorageError(f"window {window_id} v{window.version} is {window.verdict}, not QUARANTINED: "
                           "there is nothing to release")
    when = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    record = {"window_id": window_id, "version": window.version, "by": by, "reason": reason.strip(),
              "at": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
              "verdict": window.verdict, "reasons": window.reasons}
    if fence is not None:
        fence.check_publish(f"the release of window {window_id} v{window.version}")
    storage.write_json_atomic(storage.join(window.path, window_store.RELEASE), record)
    return record


def quarantine_window(root: str, window, reasons: list, by: str, evidence: dict, now: dt.datetime | None = None,
                      fence=None) -> dict:
    """Quarantine the sealed ``window`` (a window_store.SealedWindow) after sealing: QUARANTINE.json
    beside its MANIFEST (which stays as it is) with who, why, when and the evidence. Training skips
    it until ``ctpipe windows release``; a window already quarantined or released is left alone."""
    if window.verdict == "QUARANTINED" or window.released:
        raise StorageError(f"window {window.window_id} v{window.version} is already "
                           f"{'released' if window.released else 'QUARANTINED'}")
    when = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    record = {"window_id": window.window_id, "version": window.version, "by": by, "reasons": list(reasons),
              "at": when.isoformat(timespec="seconds").replace("+00:00", "Z"), "evidence": evidence}
    if fence is not None:
        fence.check_publish(f"the quarantine of window {window.window_id} v{window.version}")
    storage.write_json_atomic(storage.join(window.path, window_store.QUARANTINE), record)
    return record
