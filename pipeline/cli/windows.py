"""``ctpipe windows list|show|release|consistency``: sealed windows, their manifests and their review."""
from __future__ import annotations

import getpass
import json

from core import window_store
from core.errors import EXIT_INCONSISTENT, EXIT_OK, StorageError
from pipeline.cli.common import add_command, add_group, add_lock_timeout, check_lock_timeout, emit


def register(subparsers) -> None:
    actions = add_group(subparsers, "windows", "list and inspect sealed windows, release reviewed ones",
                        "windows_command",
                        description="Sealed windows under storage.root: list them, show a manifest, release a "
                                    "QUARANTINED window after review, compare a window with another root's.")
    p = add_command(actions, "list", "sealed windows (newest version of each)", run_list)
    p.add_argument("--all-versions", action="store_true", help="every sealed version, not just the newest")
    p = add_command(actions, "show", "the manifest of a window's newest version", run_show)
    p.add_argument("window_id", help="e.g. 20261127T0000Z (see `ctpipe windows list`)")
    p = add_command(actions, "release", "release a QUARANTINED window after review", run_release,
                    description="Record who released a QUARANTINED window, why and when (RELEASE.json beside the "
                                "MANIFEST of its newest version); only then may training use it. A release is "
                                "never overwritten: a new version of the window needs its own review.")
    p.add_argument("window_id")
    p.add_argument("--reason", required=True, help="why the window is safe to train on (recorded)")
    p.add_argument("--by", help="who releases it (default: the login name, $LOGNAME or $USER)")
    add_lock_timeout(p)
    p = add_command(actions, "consistency", "compare a window with the same window in another storage root",
                    run_consistency,
                    description="Counts and ids of a window here against the same window sealed under --against "
                                "(e.g. the Kafka stream's root vs a backfill's).",
                    epilog_note=f"Exit code {EXIT_INCONSISTENT} when they disagree.")
    p.add_argument("window_id")
    p.add_argument("--against", required=True, metavar="ROOT", help="the other storage root")


def run_list(args, ctx) -> int:
    root = ctx.config.storage.root
    windows = window_store.list_sealed(root, latest_only=not args.all_versions)
    rows = [{"window_id": w.window_id, "version": w.version, "records": w.manifest["record_count"],
             "dead_letters": w.manifest.get("dead_letters", 0), "verdict": w.verdict,
             "released": w.released, "transform": w.manifest["transform_fingerprint"],
             "schema_version": w.manifest["schema_version"], "path": w.path} for w in windows]
    lines = [f"{'WINDOW':16s} {'VER':>3s} {'RECORDS':>8s} {'DEAD':>5s} {'VERDICT':12s} TRANSFORM"]
    lines += [f"{r['window_id']:16s} {r['version']:>3d} {r['records']:>8d} {r['dead_letters']:>5d} "
              f"{r['verdict'] + (' (released)' if r['released'] else ''):12s} {r['transform']}" for r in rows]
    if not rows:
        lines = [f"no sealed windows under {root}; run `ctpipe backfill` or `ctpipe stream` first"]
    emit(args, rows, lines)
    return EXIT_OK


def _latest(root: str, window_id: str):
    window = window_store.latest_sealed(root, window_id)
    if window is None:
        raise StorageError(f"no sealed window {window_id!r} under {root}; see `ctpipe windows list`")
    return window


def run_show(args, ctx) -> int:
    window = _latest(ctx.config.storage.root, args.window_id)
    emit(args, window.manifest, [json.dumps(window.manifest, indent=2, sort_keys=True)])
    return EXIT_OK


def run_release(args, ctx) -> int:
    from pipeline.lease import root_lease
    from pipeline.windows_ops import release_window

    root = ctx.config.storage.root
    with root_lease(root, "windows release", check_lock_timeout(args)) as lock:
        record = release_window(root, args.window_id, args.reason, args.by or getpass.getuser(), fence=lock)
    emit(args, record, [f"released {record['window_id']} v{record['version']} by {record['by']}: {record['reason']}"])
    return EXIT_OK


def run_consistency(args, ctx) -> int:
    from pipeline.quality import window_consistency

    ctx.register_object_stores(("--against", args.against))
    a = _latest(ctx.config.storage.root, args.window_id)
    b = _latest(args.against, args.window_id)
    result = window_consistency(a, b, ctx.config.id_field)
    lines = [f"{result['window_id']}: {'CONSISTENT' if result['consistent'] else 'INCONSISTENT'} "
             f"(records {result['a']['records']} vs {result['b']['records']}; only here {result['only_in_a']}, "
             f"only there {result['only_in_b']})"]
    emit(args, result, lines)
    return EXIT_OK if result["consistent"] else EXIT_INCONSISTENT
