"""``ctpipe schema infer|show|diff|set``: the curated schema's lifecycle (pipeline/schema_ops.py)."""
from __future__ import annotations

import sys

from core import schema_store
from core.errors import EXIT_OK, ConfigError, StorageError
from pipeline.cli.common import add_command, add_group, add_lock_timeout, check_lock_timeout, emit


def schema_version(text: str) -> int:
    """A schema version from ``v2`` or ``2`` (argparse type and argument parser)."""
    value = text[1:] if text.startswith("v") else text
    if not value.isdigit():
        raise ConfigError(f"{text!r} is not a schema version; write e.g. v2 or 2 (see `ctpipe schema show`)")
    return int(value)


def register(subparsers) -> None:
    actions = add_group(subparsers, "schema", "infer, show, diff and set the curated schema", "schema_command",
                        description="The curated schema's lifecycle, versioned in storage: "
                                    "<root>/schema/v<N>/schema.pbtxt (TFMD text format). Records are checked "
                                    "against the newest version.")
    p = add_command(actions, "infer", "infer a schema from sealed windows (prints it)", run_infer,
                    description="Infer a schema (TRAINING/SERVING environments) from the raw examples of sealed "
                                "windows: --window IDs, or the --last N usable ones (default: all).")
    p.add_argument("--window", action="append", metavar="ID", help="a window id (repeatable)")
    p.add_argument("--last", type=int, help="the newest N non-quarantined windows")
    p.add_argument("--save", action="store_true", help="also store it as the next schema version")
    add_lock_timeout(p)
    p = add_command(actions, "show", "print a stored schema (default: the newest)", run_show)
    p.add_argument("--version", type=schema_version, help="e.g. v2")
    p = add_command(actions, "diff", "feature-level differences between two schema versions", run_diff)
    p.add_argument("a", help="older version, e.g. v1")
    p.add_argument("b", help="newer version, e.g. v2")
    p = add_command(actions, "set", "validate a schema.pbtxt and store it as a new version", run_set,
                    description="Validate a curated schema (TFMD text format; '-' reads stdin) and store it as the "
                                "next version; later runs check records against it.")
    p.add_argument("file", help="schema.pbtxt to store, or - for stdin")
    add_lock_timeout(p)


def _save(args, root: str, schema) -> int:
    """Store ``schema`` under the storage root's lease (schema versions are a publish point)."""
    from pipeline.lease import root_lease

    with root_lease(root, f"schema {args.schema_command}", check_lock_timeout(args)) as lock:
        return schema_store.save(root, schema, fence=lock)


def run_infer(args, ctx) -> int:
    from pipeline.schema_ops import choose_windows, statistics_of_windows
    from transforms.validation import infer_schema

    config = ctx.config
    windows = choose_windows(config.storage.root, args.window, args.last)
    schema = infer_schema(statistics_of_windows(windows), config.label_field, config.id_field,
                          config.event_time.field)
    result = {"windows": [w.window_id for w in windows], "stored_version": None,
              "schema": schema_store.schema_to_text(schema)}
    lines = [result["schema"]]
    if args.save:
        result["stored_version"] = _save(args, config.storage.root, schema)
        lines.append(f"# stored as schema v{result['stored_version']}")
    emit(args, result, lines)
    return EXIT_OK


def run_show(args, ctx) -> int:
    root = ctx.config.storage.root
    loaded = schema_store.load(root, args.version)
    if loaded is None:
        raise StorageError(f"no schema under {root}/schema; run `ctpipe backfill` (infers one) or "
                           "`ctpipe schema set FILE`")
    _schema, text, version = loaded
    emit(args, {"version": version, "versions": schema_store.versions(root), "schema": text},
         [f"# schema v{version}", text])
    return EXIT_OK


def run_diff(args, ctx) -> int:
    from pipeline.schema_ops import schema_diff

    root = ctx.config.storage.root
    a, b = schema_version(args.a), schema_version(args.b)
    sa, sb = schema_store.load(root, a), schema_store.load(root, b)
    if sa is None:
        raise StorageError(f"no schema under {root}/schema; run `ctpipe backfill` (infers one) or "
                           "`ctpipe schema set FILE`")
    diff = dict(schema_diff(sa[0], sb[0]), a=a, b=b)
    lines = [f"schema v{a} -> v{b}"]
    lines += [f"+ {n}" for n in diff["added"]] + [f"- {n}" for n in diff["removed"]]
    for name, change in diff["changed"].items():
        lines += [f"~ {name}", f"    v{a}: {change['from']}", f"    v{b}: {change['to']}"]
    if len(lines) == 1:
        lines.append("no feature-level differences")
    emit(args, diff, lines)
    return EXIT_OK


def run_set(args, ctx) -> int:
    from pipeline.schema_ops import validate_schema_text

    config = ctx.config
    if args.file == "-":
        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            with open(args.file, encoding="utf-8") as handle:
                text, source = handle.read(), args.file
        except OSError as exc:
            raise ConfigError(f"cannot read schema file {args.file!r}: {exc.strerror}") from exc
    schema = validate_schema_text(text, source, config)
    before = schema_store.versions(config.storage.root)
    version = _save(args, config.storage.root, schema)
    unchanged = bool(before) and version == before[-1]
    emit(args, {"version": version, "unchanged": unchanged},
         [f"schema v{version} " + ("unchanged (same as the newest version)" if unchanged else "stored")])
    return EXIT_OK
