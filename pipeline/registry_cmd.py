"""``ctpipe registry list|show|promote|rollback``: the model registry from the command line."""
from __future__ import annotations

import argparse
import dataclasses
import json


def open_configured_registry(config):
    from training.registry import open_registry

    return open_registry(config.registry.uri)


def _version_row(mv) -> dict:
    return {"version": mv.version, "created_at": mv.created_at, "aliases": list(mv.aliases),
            "blessed": bool(mv.blessing.get("blessed")), "auc": mv.metrics.get("auc"),
            "examples": mv.metrics.get("example_count"), "uri": mv.uri}


def cmd_list(args, config, options):
    from pipeline.cli import emit

    registry = open_configured_registry(config)
    name = args.model or config.registry.model_name
    rows = [_version_row(mv) for mv in registry.list_versions(name)]
    lines = [f"{'VERSION':>7s}  {'BLESSED':7s} {'AUC':>7s} {'EXAMPLES':>8s}  ALIASES"]
    for r in rows:
        auc = f"{r['auc']:.4f}" if isinstance(r["auc"], float) else "-"
        lines.append(f"{r['version']:>7d}  {'yes' if r['blessed'] else 'no':7s} {auc:>7s} {r['examples'] or 0:>8d}  "
                     f"{','.join(r['aliases'])}")
    if not rows:
        lines = [f"no versions of model {name!r} in {config.registry.uri}; run `ctpipe train` first"]
    emit(args, {"model": name, "versions": rows}, lines)
    return 0


def cmd_show(args, config, options):
    from pipeline.cli import emit

    registry = open_configured_registry(config)
    name = args.model or config.registry.model_name
    version = args.version
    if version is None:
        version = registry.get_alias(name, args.alias)
        if version is None:
            from core.errors import RegistryError

            raise RegistryError(f"model {name!r} has no {args.alias!r} alias yet; pass a VERSION")
    mv = registry.get(name, version)
    data = dataclasses.asdict(mv)
    data["alias_history"] = {a: registry.alias_history(name, a) for a in mv.aliases}
    emit(args, data, [json.dumps(data, indent=2, sort_keys=True, default=str)])
    return 0


def cmd_promote(args, config, options):
    from pipeline.cli import emit

    registry = open_configured_registry(config)
    name = args.model or config.registry.model_name
    registry.promote(name, args.version, alias=args.alias, force=args.force, reason=args.reason or "")
    emit(args, {"model": name, "alias": args.alias, "version": args.version},
         [f"{name}: {args.alias} -> v{args.version}"])
    return 0


def cmd_rollback(args, config, options):
    from pipeline.cli import emit

    registry = open_configured_registry(config)
    name = args.model or config.registry.model_name
    before = registry.get_alias(name, args.alias)
    after = registry.rollback(name, alias=args.alias, reason=args.reason or "")
    emit(args, {"model": name, "alias": args.alias, "from": before, "to": after},
         [f"{name}: {args.alias} rolled back v{before} -> v{after}"])
    return 0


def register(subparsers) -> None:
    from pipeline.cli import EXIT_CODES, common_parent

    parent = common_parent()
    reg = subparsers.add_parser("registry", parents=[parent], help="model versions, aliases, promote and rollback")
    sub = reg.add_subparsers(dest="registry_command", required=True, metavar="ACTION")

    def add(name, help_text, func):
        p = sub.add_parser(name, parents=[parent], help=help_text, description=help_text,
                           epilog="exit codes:\n" + EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--model", help="model name (default: registry.model_name)")
        p.set_defaults(func=func)
        return p

    add("list", "versions with blessing, AUC and aliases", cmd_list)
    p = add("show", "one version's metrics, blessing, lineage and alias history", cmd_show)
    p.add_argument("version", nargs="?", type=int, help="version (default: the --alias target)")
    p.add_argument("--alias", default="production")
    p = add("promote", "point an alias at a blessed version", cmd_promote)
    p.add_argument("version", type=int)
    p.add_argument("--alias", default="production")
    p.add_argument("--force", action="store_true", help="allow an unblessed version (recorded in the history)")
    p.add_argument("--reason", help="why (kept in the alias history)")
    p = add("rollback", "move an alias back to the previous blessed version it pointed at", cmd_rollback)
    p.add_argument("--alias", default="production")
    p.add_argument("--reason", help="why (kept in the alias history)")
