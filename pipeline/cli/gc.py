"""``ctpipe gc``: remove what nothing references any more, by ``retention`` (pipeline/gc.py)."""
from __future__ import annotations

from core.errors import EXIT_OK
from pipeline.cli.common import add_command, add_lock_timeout, check_lock_timeout, emit


def register(subparsers) -> None:
    p = add_command(
        subparsers, "gc", "remove superseded window versions, finished runs' scratch and other unreferenced data",
        run,
        description="Garbage collection under storage.root by the config's retention section: superseded window "
                    "versions, version folders without a manifest, finished and crashed runs' outputs and scratch, "
                    "stream parts of windows far behind the watermark, old dead letters and run records, and "
                    "this machine's temp dirs of ctpipe processes that are gone. Never: a window's newest version, "
                    "versions in the lineage of a model an alias points at (or production can roll back to), what "
                    "a stream checkpoint still needs. gc holds the storage root's lease while it runs.",
        epilog_note="A gc killed midway leaves a consistent store (manifests and checkpoints are updated before "
                    "files go); run it again to finish.")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed (and what is kept, and why); "
                                                          "remove nothing")
    add_lock_timeout(p)


def run(args, ctx) -> int:
    from pipeline.gc import run_gc

    report = run_gc(ctx.config, dry_run=args.dry_run, lock_timeout_s=check_lock_timeout(args))
    items = report["would_delete" if args.dry_run else "deleted"]
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{verb} {item['kind']:20s} {item['path']}  ({item['reason']})" for item in items]
    lines += [f"kept      {item['kind']:20s} {item['path']}  ({item['reason']})" for item in report["kept"]]
    lines += [f"skipped   {s['source']}: {s['reason']}" for s in report["skipped"]]
    lines.append(f"{len(items)} {'to remove' if args.dry_run else 'removed'}, {len(report['kept'])} kept")
    emit(args, report, lines)
    return EXIT_OK
