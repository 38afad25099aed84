"""``ctpipe backfill``: the configured files -> sealed event-time windows, in one Beam graph."""
from __future__ import annotations

from core.errors import ConfigError, InputError
from pipeline.cli.common import add_command, add_lock_timeout, check_lock_timeout, emit, parse_time


def register(subparsers) -> None:
    p = add_command(subparsers, "backfill", "read the configured files, seal event-time windows (one Beam graph)",
                    run, description="Read source.files (or --input), decode, validate and transform the events "
                                     "and seal one window per event-time interval. The schema is inferred and "
                                     "stored on the first run; a rerun over the same input is a no-op.")
    p.add_argument("--from", dest="start", help="first event time to include (ISO-8601, inclusive)")
    p.add_argument("--to", dest="end", help="event time to stop at (ISO-8601, exclusive)")
    p.add_argument("--input", help="glob of input files (overrides source.files.uri); windows it touches get a new "
                                   "version holding their earlier records plus these")
    p.add_argument("--analyze-transform", action="store_true",
                   help="analyze the preprocessing_fn over this run's windows and publish it as the transform every "
                        "later seal applies (default: apply the published one; the first run analyzes)")
    add_lock_timeout(p)


def _check_local_input(uri: str) -> None:
    """An absolute local glob that matches nothing fails here, before Beam and TensorFlow load
    (the reader's own check, ``transforms.sources.match_files``, covers every other URI)."""
    import os

    from core import storage

    if storage.is_local(uri) and os.path.isabs(uri) and not storage.glob(uri):
        raise InputError.no_match(uri)


def run(args, ctx) -> int:
    start_ms = parse_time(args.start, "--from") if args.start else None
    end_ms = parse_time(args.end, "--to") if args.end else None
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ConfigError(f"--to {args.end} must be after --from {args.start}")
    config = ctx.config
    if args.input:
        config = config.replace(source=config.source.replace(files=config.source.files.replace(uri=args.input)))
    if not config.source.files.uri:
        raise ConfigError("backfill: no input; set source.files.uri in the config or pass --input GLOB")
    _check_local_input(config.source.files.uri)
    from pipeline import metrics
    from pipeline.backfill import run_backfill

    result = run_backfill(config, ctx.options, start_ms, end_ms, analyze_transform=args.analyze_transform,
                          lock_timeout_s=check_lock_timeout(args))
    metrics.push(config.metrics.pushgateway, "backfill")
    record = result.record
    counters = record["counters"]
    dead = sum(v for k, v in counters.items() if k.startswith("deadletter:"))
    lines = [f"run {result.run_id}: {counters.get('records_in', 0)} records read, {dead} dead letters, "
             f"{counters.get('outside_range', 0)} outside the range"]
    for window in record["windows"]:
        state = "sealed" if window["written"] else "unchanged"
        lines.append(f"  {window['window_id']} v{window['version']} {state:9s} {window['records']:7d} records "
                     f"{window['verdict']}")
    emit(args, record, lines)
    return 0
