"""`ctpipe schema infer|show|diff|set`: the curated schema's lifecycle, versioned in storage.

Schemas live at <root>/schema/v<N>/schema.pbtxt (TFMD text format, pipeline.schema_store).
``infer`` recomputes TFDV statistics from the raw examples of the chosen sealed windows (window
statistics cannot be merged exactly: their histograms and quantiles are per window) and infers a
schema with TRAINING/SERVING environments; ``set`` validates a curated file and stores it as a
new version; ``diff`` compares two versions feature by feature.
"""
from __future__ import annotations

import sys

from core.errors import ConfigError, StorageError


def statistics_of_windows(windows):
    """TFDV statistics over the raw examples of ``windows`` (SealedWindow list), in one pass."""
    import pyarrow as pa
    import tensorflow as tf
    from tfx_bsl.coders import example_coder

    from core import storage
    from transforms.validation import window_statistics

    serialized = []
    for window in windows:
        for path in window.file_paths("raw"):
            data = storage.read_bytes(path)
            serialized += [r.numpy() for r in tf.data.TFRecordDataset([tf.constant(_local_copy(path, data))],
                                                                      compression_type="GZIP")]
    if not serialized:
        raise StorageError("the chosen windows hold no records; pick other windows (see `ctpipe windows list`)")
    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(serialized)
    return window_statistics(pa.RecordBatch.from_arrays(batch.columns, batch.schema.names), "+".join(
        w.window_id for w in windows))


def _local_copy(path, data):
    import os
    import tempfile

    if "://" not in path:
        return path
    fd, local = tempfile.mkstemp(suffix=".tfrecord.gz")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return local


def choose_windows(root, window_ids=None, last=None):
    from core import window_store

    sealed = window_store.list_sealed(root)
    if window_ids:
        by_id = {w.window_id: w for w in sealed}
        missing = [w for w in window_ids if w not in by_id]
        if missing:
            raise StorageError(f"no sealed window {missing[0]!r} under {root}; see `ctpipe windows list`")
        chosen = [by_id[w] for w in window_ids]
    else:
        chosen = [w for w in sealed if w.usable_for_training]
        if last:
            chosen = chosen[-last:]
    if not chosen:
        raise StorageError(f"no sealed, non-quarantined windows under {root}; run `ctpipe backfill` first")
    return chosen


def validate_schema_text(text: str, source: str, config):
    """Parse and check a curated schema; errors name the file and the fix."""
    from google.protobuf import text_format

    from core.schema_store import schema_from_text
    from transforms.validation import SERVING, TRAINING

    try:
        schema = schema_from_text(text)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source} is not a TFMD Schema in text format: {exc}") from exc
    names = [f.name for f in schema.feature]
    if not names:
        raise ConfigError(f"{source} declares no feature")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: feature {dupes[0]!r} is declared twice")
    for required in (config.id_field, config.event_time.field):
        if required not in names:
            raise ConfigError(f"{source}: the id/event-time field {required!r} is not a feature; add it")
    domains = {d.name for d in schema.string_domain}
    for f in schema.feature:
        if f.HasField("domain") and f.domain not in domains:
            raise ConfigError(f"{source}: feature {f.name!r} refers to string_domain {f.domain!r}, which is not "
                              "declared")
        if f.HasField("float_domain") and f.float_domain.HasField("min") and f.float_domain.HasField("max") \
                and f.float_domain.min > f.float_domain.max:
            raise ConfigError(f"{source}: feature {f.name!r} has float_domain min {f.float_domain.min} above max "
                              f"{f.float_domain.max}")
        for env in list(f.in_environment) + list(f.not_in_environment):
            if env not in schema.default_environment:
                raise ConfigError(f"{source}: feature {f.name!r} names environment {env!r}, not one of "
                                  f"default_environment {list(schema.default_environment)}")
    if config.label_field in names and not {TRAINING, SERVING} <= set(schema.default_environment):
        raise ConfigError(f"{source}: declare default_environment: \"TRAINING\" and \"SERVING\" so the label "
                          f"{config.label_field!r} may be absent from serving data")
    return schema


def _feature_summary(schema) -> dict:
    from google.protobuf import text_format

    out = {}
    domains = {d.name: list(d.value) for d in schema.string_domain}
    for f in schema.feature:
        copy = type(f)()
        copy.CopyFrom(f)
        if copy.HasField("domain"):
            copy.ClearField("domain")
            copy.string_domain.value.extend(domains.get(f.domain, []))
        out[f.name] = text_format.MessageToString(copy, as_one_line=True)
    return out


def schema_diff(a, b) -> dict:
    """Feature-level differences from schema ``a`` to ``b``: added, removed and changed features
    (with the old and new one-line text of each changed feature, string domains resolved)."""
    fa, fb = _feature_summary(a), _feature_summary(b)
    return {
        "added": sorted(set(fb) - set(fa)),
        "removed": sorted(set(fa) - set(fb)),
        "changed": {n: {"from": fa[n], "to": fb[n]} for n in sorted(set(fa) & set(fb)) if fa[n] != fb[n]},
        "environments": {"from": list(a.default_environment), "to": list(b.default_environment)},
    }


def cmd_infer(args, config, options):
    from core import schema_store
    from core.schema_store import schema_to_text
    from pipeline.cli import emit
    from transforms.validation import infer_schema

    windows = choose_windows(config.storage.root, args.window, args.last)
    schema = infer_schema(statistics_of_windows(windows), config.label_field, config.id_field,
                          config.event_time.field)
    result = {"windows": [w.window_id for w in windows], "stored_version": None, "schema": schema_to_text(schema)}
    if args.save:
        result["stored_version"] = schema_store.save(config.storage.root, schema)
    lines = [result["schema"]]
    if args.save:
        lines.append(f"# stored as schema v{result['stored_version']}")
    emit(args, result, lines)
    return 0


def cmd_show(args, config, options):
    from core import schema_store
    from pipeline.cli import emit

    loaded = schema_store.load(config.storage.root, args.version)
    if loaded is None:
        raise StorageError(f"no schema under {config.storage.root}/schema; run `ctpipe backfill` "
                           "(infers one) or `ctpipe schema set FILE`")
    _schema, text, version = loaded
    emit(args, {"version": version, "versions": schema_store.versions(config.storage.root), "schema": text},
         [f"# schema v{version}", text])
    return 0


def _version(text: str) -> int:
    value = text[1:] if text.startswith("v") else text
    if not value.isdigit():
        raise ConfigError(f"{text!r} is not a schema version; write e.g. v2 or 2 (see `ctpipe schema show`)")
    return int(value)


def cmd_diff(args, config, options):
    from core import schema_store
    from pipeline.cli import emit

    a, b = _version(args.a), _version(args.b)
    sa, sb = schema_store.load(config.storage.root, a), schema_store.load(config.storage.root, b)
    if sa is None:
        raise StorageError(f"no schema under {config.storage.root}/schema")
    diff = dict(schema_diff(sa[0], sb[0]), a=a, b=b)
    lines = [f"schema v{a} -> v{b}"]
    lines += [f"+ {n}" for n in diff["added"]] + [f"- {n}" for n in diff["removed"]]
    for name, change in diff["changed"].items():
        lines += [f"~ {name}", f"    v{a}: {change['from']}", f"    v{b}: {change['to']}"]
    if len(lines) == 1:
        lines.append("no feature-level differences")
    emit(args, diff, lines)
    return 0


def cmd_set(args, config, options):
    from core import schema_store
    from pipeline.cli import emit

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
    version = schema_store.save(config.storage.root, schema)
    unchanged = bool(before) and version == before[-1]
    emit(args, {"version": version, "unchanged": unchanged},
         [f"schema v{version} " + ("unchanged (same as the newest version)" if unchanged else "stored")])
    return 0


def register(subparsers) -> None:
    from pipeline.cli import common_parent

    common = common_parent()
    schema = subparsers.add_parser("schema", parents=[common], help="infer, show, diff and set the curated schema",
                                   description=__doc__.split("\n\n")[0])
    sub = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    p = sub.add_parser("infer", parents=[common], help="infer a schema from sealed windows (prints it)",
                       description="Infer a schema (TRAINING/SERVING environments) from the raw examples of "
                                   "sealed windows: --window IDs, or the --last N usable ones (default: all).")
    p.add_argument("--window", action="append", metavar="ID", help="a window id (repeatable)")
    p.add_argument("--last", type=int, help="the newest N non-quarantined windows")
    p.add_argument("--save", action="store_true", help="also store it as the next schema version")
    p.set_defaults(func=cmd_infer)
    p = sub.add_parser("show", parents=[common], help="print a stored schema (default: the newest)")
    p.add_argument("--version", type=_version, help="e.g. v2")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("diff", parents=[common], help="feature-level differences between two schema versions")
    p.add_argument("a", help="older version, e.g. v1")
    p.add_argument("b", help="newer version, e.g. v2")
    p.set_defaults(func=cmd_diff)
    p = sub.add_parser("set", parents=[common], help="validate a schema.pbtxt and store it as a new version",
                       description="Validate a curated schema (TFMD text format; '-' reads stdin) and store "
                                   "it as the next version; later runs check records against it.")
    p.add_argument("file")
    p.set_defaults(func=cmd_set)
