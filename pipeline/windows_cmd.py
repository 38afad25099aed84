"""`ctpipe windows release ID --reason TEXT` and `ctpipe windows consistency ID --against ROOT`.

Releasing writes RELEASE.json (who, why, when, verdict at release) beside the MANIFEST of the
window's newest version; training uses a QUARANTINED window only when it has one
(SealedWindow.usable_for_training). A release is never overwritten: a new version of the window
needs its own review.
"""
from __future__ import annotations

import datetime as dt
import getpass
import os

from core.errors import ConfigError, StorageError


def release_window(root: str, window_id: str, reason: str, by: str, now: dt.datetime | None = None) -> dict:
    from core import storage, window_store

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
              "verdict": window.verdict, "reasons": window.manifest["validation"]["reasons"]}
    storage.write_json_atomic(storage.join(window.path, window_store.RELEASE), record)
    return record


def cmd_release(args, config, options):
    from pipeline.cli import emit

    by = args.by or os.environ.get("USER") or getpass.getuser()
    record = release_window(config.storage.root, args.window_id, args.reason, by)
    emit(args, record, [f"released {record['window_id']} v{record['version']} by {record['by']}: {record['reason']}"])
    return 0


def cmd_consistency(args, config, options):
    from core import window_store
    from pipeline.cli import emit
    from pipeline.quality import window_consistency

    a = window_store.latest_sealed(config.storage.root, args.window_id)
    b = window_store.latest_sealed(args.against, args.window_id)
    for window, root in ((a, config.storage.root), (b, args.against)):
        if window is None:
            raise StorageError(f"no sealed window {args.window_id!r} under {root}; see `ctpipe windows list`")
    result = window_consistency(a, b, config.id_field)
    lines = [f"{result['window_id']}: {'CONSISTENT' if result['consistent'] else 'INCONSISTENT'} "
             f"(records {result['a']['records']} vs {result['b']['records']}; only here {result['only_in_a']}, "
             f"only there {result['only_in_b']})"]
    emit(args, result, lines)
    return 0 if result["consistent"] else 11


def add_release_parser(windows_subparsers) -> None:
    """Attach `release` and `consistency` under the `windows` command's subparsers."""
    from pipeline.cli import common_parent

    common = common_parent()
    p = windows_subparsers.add_parser("release", parents=[common], help="release a QUARANTINED window after review",
                                      description=__doc__.split("\n\n")[1])
    p.add_argument("window_id")
    p.add_argument("--reason", required=True, help="why the window is safe to train on (recorded)")
    p.add_argument("--by", help="who releases it (default: $USER)")
    p.set_defaults(func=cmd_release)
    p = windows_subparsers.add_parser(
        "consistency", parents=[common], help="compare a window with the same window in another storage root",
        description="Counts and ids of a window here against the same window sealed under --against (e.g. the "
                    "Kafka stream's root vs a backfill's). Exit code 1 when they disagree.")
    p.add_argument("window_id")
    p.add_argument("--against", required=True, metavar="ROOT", help="the other storage root")
    p.set_defaults(func=cmd_consistency)
