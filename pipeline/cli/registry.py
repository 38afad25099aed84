"""``ctpipe registry list|show|fetch|promote|rollback``: the model registry from the command line."""
from __future__ import annotations

import dataclasses
import json

from core.errors import EXIT_OK, RegistryError
from pipeline.cli.common import add_command, add_group, emit

PRODUCTION = "production"


def register(subparsers) -> None:
    actions = add_group(subparsers, "registry", "model versions, aliases, promote and rollback", "registry_command",
                        description="The model registry named by registry.uri (a directory, s3://, gs:// or "
                                    "mlflow+http://): versions with their metrics, blessing and lineage, and the "
                                    "aliases (production) that point at them.")

    def add(name, help_text, handler):
        p = add_command(actions, name, help_text, handler)
        p.add_argument("--model", help="model name (default: registry.model_name)")
        return p

    add("list", "versions with blessing, AUC and aliases", run_list)
    p = add("show", "one version's metrics, blessing, lineage and alias history", run_show)
    p.add_argument("version", nargs="?", type=int, help="version (default: the --alias target)")
    p.add_argument("--alias", default=PRODUCTION, help=f"alias whose target is shown (default {PRODUCTION})")
    p = add("promote", "point an alias at a blessed version", run_promote)
    p.add_argument("version", type=int)
    p.add_argument("--alias", default=PRODUCTION, help=f"alias to move (default {PRODUCTION})")
    p.add_argument("--force", action="store_true", help="allow an unblessed version (recorded in the history)")
    p.add_argument("--reason", help="why (kept in the alias history)")
    p = add("fetch", "copy a version's SavedModel and documents to a local directory, verified", run_fetch)
    p.add_argument("version", nargs="?", type=int, help="version (default: the --alias target)")
    p.add_argument("--alias", default=PRODUCTION, help=f"alias whose target is fetched (default {PRODUCTION})")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="local directory to create (absent or empty); every file is checked against CHECKSUMS.json")
    p = add("rollback", "move an alias back to the previous blessed version it pointed at", run_rollback)
    p.add_argument("--alias", default=PRODUCTION, help=f"alias to move back (default {PRODUCTION})")
    p.add_argument("--reason", help="why (kept in the alias history)")


def _open(args, ctx):
    """(registry, model name) for this command."""
    from pipeline.stores import open_registry

    return open_registry(ctx.config), args.model or ctx.config.registry.model_name


def _version_row(mv) -> dict:
    return {"version": mv.version, "created_at": mv.created_at, "aliases": list(mv.aliases),
            "blessed": bool(mv.blessing.get("blessed")), "auc": mv.metrics.get("auc"),
            "examples": mv.metrics.get("example_count"), "uri": mv.uri}


def run_list(args, ctx) -> int:
    registry, name = _open(args, ctx)
    rows = [_version_row(mv) for mv in registry.list_versions(name)]
    lines = [f"{'VERSION':>7s}  {'BLESSED':7s} {'AUC':>7s} {'EXAMPLES':>8s}  ALIASES"]
    for r in rows:
        auc = f"{r['auc']:.4f}" if isinstance(r["auc"], float) else "-"
        lines.append(f"{r['version']:>7d}  {'yes' if r['blessed'] else 'no':7s} {auc:>7s} {r['examples'] or 0:>8d}  "
                     f"{','.join(r['aliases'])}")
    if not rows:
        lines = [f"no versions of model {name!r} in {ctx.config.registry.uri}; run `ctpipe train` first"]
    emit(args, {"model": name, "versions": rows}, lines)
    return EXIT_OK


def _version_or_alias(registry, name: str, args) -> int:
    if args.version is not None:
        return args.version
    version = registry.get_alias(name, args.alias)
    if version is None:
        raise RegistryError(f"model {name!r} has no {args.alias!r} alias yet; pass a VERSION "
                            "(see `ctpipe registry list`)")
    return version


def run_show(args, ctx) -> int:
    registry, name = _open(args, ctx)
    mv = registry.get(name, _version_or_alias(registry, name, args))
    data = dataclasses.asdict(mv)
    data["alias_history"] = {a: registry.alias_history(name, a) for a in mv.aliases}
    emit(args, data, [json.dumps(data, indent=2, sort_keys=True, default=str)])
    return EXIT_OK


def run_fetch(args, ctx) -> int:
    registry, name = _open(args, ctx)
    version = _version_or_alias(registry, name, args)
    out = registry.fetch(name, version, args.out)
    emit(args, {"model": name, "version": version, "out": out}, [f"{name} v{version} -> {out} (checksums verified)"])
    return EXIT_OK


def run_promote(args, ctx) -> int:
    registry, name = _open(args, ctx)
    registry.promote(name, args.version, alias=args.alias, force=args.force, reason=args.reason or "")
    emit(args, {"model": name, "alias": args.alias, "version": args.version},
         [f"{name}: {args.alias} -> v{args.version}"])
    return EXIT_OK


def run_rollback(args, ctx) -> int:
    registry, name = _open(args, ctx)
    before = registry.get_alias(name, args.alias)
    after = registry.rollback(name, alias=args.alias, reason=args.reason or "")
    emit(args, {"model": name, "alias": args.alias, "from": before, "to": after},
         [f"{name}: {args.alias} rolled back v{before} -> v{after}"])
    return EXIT_OK
