"""The ``ctpipe`` command.

Exit codes (every subcommand):
  0   success
  1   unexpected internal error (a bug: please report it with the traceback from --debug)
  2   bad configuration or command-line value
  3   input missing, unreadable or corrupt (Kafka: unreachable, login or TLS refused, topic missing)
  4   storage root holds something unexpected
  5   another ctpipe process holds the lock on the storage root
  6   model registry refused the operation (missing version, integrity failure...)
  10  the evaluation gate rejected the candidate model (a decision, not a crash)
  11  `windows consistency`: the two sources disagree on the window's counts or ids
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import sys

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from core.errors import ConfigError, CtpipeError, find_in_chain

EXIT_CODES = __doc__.split("Exit codes (every subcommand):\n", 1)[1]


def parse_time(text: str, flag: str) -> int:
    """Epoch milliseconds of an ISO-8601 time (UTC when no zone is given)."""
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not an ISO-8601 time such as 2026-11-27T00:00Z "
                          "or 2026-11-27T00:00:00+00:00") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp() * 1000)


def progress(iterable, total: int, unit: str):
    """A progress bar on stderr for long work, only when a person is watching (stderr is a TTY)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, unit=unit, disable=not sys.stderr.isatty(), leave=False)


def emit(args, data, text_lines) -> None:
    """Print ``data`` as JSON with --json, else the human lines."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in text_lines:
            print(line)


# --------------------------------------------------------------------------- commands


def cmd_gen(args, config, options):
    from pipeline import synthetic

    start = dt.datetime.fromtimestamp(parse_time(args.start, "--start") / 1000, tz=dt.timezone.utc)
    lines = synthetic.generate(start, args.hours, args.rows_per_hour, seed=args.seed,
                               malformed_per_hour=args.malformed_per_hour,
                               out_of_range_per_hour=args.out_of_range_per_hour,
                               mean_shift_from_hour=args.drift_from_hour)
    lines = progress(lines, total=args.hours * (args.rows_per_hour + args.malformed_per_hour
                                                + args.out_of_range_per_hour), unit="events")
    if args.to_kafka:
        from transforms.kafka.produce import produce_generated

        produced = produce_generated(config, args.to_kafka, lines, args.rate)
        emit(args, produced, [f"produced {produced['valid']} events and {produced['malformed']} malformed "
                              f"messages to topic {args.to_kafka}"])
        return 0
    if not args.out:
        raise ConfigError("gen: pass --out DIR (files) or --to-kafka TOPIC")
    stats = synthetic.write_jsonl(args.out, lines, rows_per_hour=args.rows_per_hour + args.malformed_per_hour
                                  + args.out_of_range_per_hour)
    emit(args, {"out": args.out, "valid": stats.valid, "malformed": stats.malformed,
                "out_of_range": stats.out_of_range},
         [f"wrote {stats.valid} events ({stats.out_of_range} out of range) and {stats.malformed} malformed "
          f"lines to {args.out}"])
    return 0


def cmd_backfill(args, config, options):
    from pipeline import metrics
    from pipeline.backfill import run_backfill

    start_ms = parse_time(args.start, "--from") if args.start else None
    end_ms = parse_time(args.end, "--to") if args.end else None
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ConfigError(f"--to {args.end} must be after --from {args.start}")
    if args.input:
        from pipeline.config import FilesSourceConfig, SourceConfig

        config = config.replace(source=SourceConfig(files=FilesSourceConfig(args.input, config.source.files.format),
                                                    kafka=config.source.kafka))
    if not config.source.files.uri:
        raise ConfigError("backfill: no input; set source.files.uri in the config or pass --input GLOB")
    result = run_backfill(config, options, start_ms, end_ms)
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


def cmd_train(args, config, options):
    from pipeline import metrics
    from pipeline.controller import run_training

    outcome = run_training(config, force_push=args.force)
    metrics.push(config.metrics.pushgateway, "train")
    if outcome["role"] == "worker":  # multi-worker training: the chief evaluates and pushes
        emit(args, outcome, [f"worker {outcome['task']}: trained {outcome['epochs_run']} epochs "
                             f"({outcome['train_examples']} examples, {outcome['strategy']}); "
                             "the chief evaluates and pushes"])
        return 0
    lines = [f"candidate trained on {len(outcome['windows'])} windows "
             f"({outcome['train_examples']} examples, {outcome['strategy']}, warm start: {outcome['warm_start']['used']})",
             "metrics: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in sorted(outcome["metrics"].items()) if k != "slices")]
    for check in outcome["blessing"]["checks"]:
        lines.append(f"  {'ok  ' if check['passed'] else 'FAIL'} {check['description']}")
    if outcome["pushed"]:
        lines.append(f"blessed: pushed {config.registry.model_name} v{outcome['version']}; production -> "
                     f"v{outcome['version']}")
    else:
        lines.append("not blessed: nothing pushed, production alias unchanged")
    emit(args, outcome, lines)
    return 0 if outcome["blessing"]["blessed"] else 10


def cmd_windows_list(args, config, options):
    from core import window_store

    windows = window_store.list_sealed(config.storage.root, latest_only=not args.all_versions)
    rows = [{"window_id": w.window_id, "version": w.version, "records": w.manifest["record_count"],
             "dead_letters": w.manifest.get("dead_letters", 0), "verdict": w.verdict,
             "released": w.released, "transform": w.manifest["transform_fingerprint"],
             "schema_version": w.manifest["schema_version"], "path": w.path} for w in windows]
    lines = [f"{'WINDOW':16s} {'VER':>3s} {'RECORDS':>8s} {'DEAD':>5s} {'VERDICT':12s} TRANSFORM"]
    lines += [f"{r['window_id']:16s} {r['version']:>3d} {r['records']:>8d} {r['dead_letters']:>5d} "
              f"{r['verdict'] + (' (released)' if r['released'] else ''):12s} {r['transform']}" for r in rows]
    if not rows:
        lines = [f"no sealed windows under {config.storage.root}; run `ctpipe backfill` or `ctpipe stream` first"]
    emit(args, rows, lines)
    return 0


def cmd_windows_show(args, config, options):
    from core import window_store
    from core.errors import StorageError

    window = window_store.latest_sealed(config.storage.root, args.window_id)
    if window is None:
        raise StorageError(f"no sealed window {args.window_id!r} under {config.storage.root}; "
                           "see `ctpipe windows list`")
    emit(args, window.manifest, [json.dumps(window.manifest, indent=2, sort_keys=True)])
    return 0


def cmd_demo(args, config, options):
    from pipeline.demo import run_demo

    summary = run_demo(args.workdir, options, hours=args.hours, rows_per_hour=args.rows_per_hour)
    emit(args, summary, summary["lines"])
    return 0


# --------------------------------------------------------------------------- parser


# Modules that own their subcommands: each has register(subparsers).
COMMAND_MODULES = ("pipeline.registry_cmd", "pipeline.schema_cmd", "pipeline.report", "pipeline.stream")


def common_parent() -> argparse.ArgumentParser:
    """Options every subcommand accepts (so they work before or after the subcommand)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="YAML config file (default: ./ctpipe.yaml if present, "
                                                       "else built-in defaults)")
    common.add_argument("--runner-config", default=argparse.SUPPRESS,
                        help="Beam pipeline options file (default: config's runner_config, "
                             "runner_configs/direct.yaml)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable JSON on stdout")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="full tracebacks and Beam/TF logs")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = common_parent()

    parser = argparse.ArgumentParser(
        prog="ctpipe", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Continuous-training data pipeline: events -> validated, versioned TFRecord windows -> "
                    "gated models.",
        epilog="exit codes:\n" + EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_text, func, **kw):
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                           epilog="exit codes:\n" + EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
                           **kw)
        p.set_defaults(func=func)
        return p

    p = add("gen", "write synthetic sensor events (JSONL files or a Kafka topic)", cmd_gen)
    p.add_argument("--out", help="output directory for events-NNNN.jsonl files")
    p.add_argument("--to-kafka", metavar="TOPIC", help="produce to this topic of source.kafka instead of files")
    p.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as possible)")
    p.add_argument("--hours", type=int, default=6, help="event-time hours to generate (default 6)")
    p.add_argument("--rows-per-hour", type=int, default=2000, help="valid events per hour (default 2000)")
    p.add_argument("--start", default="2026-11-27T00:00Z", help="event time of the first hour (ISO-8601)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--malformed-per-hour", type=int, default=2, help="malformed lines per hour (default 2)")
    p.add_argument("--out-of-range-per-hour", type=int, default=1, help="humidity > 100 per hour (default 1)")
    p.add_argument("--drift-from-hour", type=int, default=None,
                   help="shift the temperature mean from this hour on (to demo drift detection)")

    p = add("backfill", "read the configured files, seal event-time windows (one Beam graph)", cmd_backfill)
    p.add_argument("--from", dest="start", help="first event time to include (ISO-8601, inclusive)")
    p.add_argument("--to", dest="end", help="event time to stop at (ISO-8601, exclusive)")
    p.add_argument("--input", help="glob of input files (overrides source.files.uri)")

    p = add("train", "train on sealed windows, evaluate against production, push if blessed", cmd_train)
    p.add_argument("--force", action="store_true", help="push even if the gate rejects (recorded in lineage)")

    windows = sub.add_parser("windows", help="list and inspect sealed windows", parents=[common])
    wsub = windows.add_subparsers(dest="windows_command", required=True, metavar="ACTION")
    p = wsub.add_parser("list", parents=[common], help="sealed windows (newest version of each)")
    p.add_argument("--all-versions", action="store_true", help="every sealed version, not just the newest")
    p.set_defaults(func=cmd_windows_list)
    p = wsub.add_parser("show", parents=[common], help="the manifest of a window's newest version")
    p.add_argument("window_id")
    p.set_defaults(func=cmd_windows_show)
    importlib.import_module("pipeline.windows_cmd").add_release_parser(wsub)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)

    p = add("demo", "generate data, backfill, train and list the results under --workdir", cmd_demo)
    p.add_argument("--workdir", default="./demo-work", help="where data, windows and the registry go")
    p.add_argument("--hours", type=int, default=6)
    p.add_argument("--rows-per-hour", type=int, default=2000)
    return parser


def _quiet_logs(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in ("apache_beam", "tensorflow", "absl", "kafka", "tensorflow_transform"):
        # Beam logs a worker's traceback at ERROR before re-raising it; ctpipe prints one line instead.
        logging.getLogger(name).setLevel(level if debug else logging.CRITICAL)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("config", None), ("runner_config", None), ("json", False), ("debug", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    _quiet_logs(args.debug)
    try:
        from pipeline.config import load_config
        from pipeline.options import pipeline_options

        config = load_config(args.config)
        runner_config = args.runner_config or config.runner_config
        options = pipeline_options(runner_config)
        return args.func(args, config, options)
    except KeyboardInterrupt:
        print("ctpipe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line, documented exit code
        cause = find_in_chain(exc, CtpipeError)
        if args.debug or cause is None:
            import traceback

            traceback.print_exc()
        if cause is None:
            print(f"ctpipe: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"ctpipe: error: {str(cause).split(' [while running')[0]}", file=sys.stderr)
        return cause.exit_code


if __name__ == "__main__":
    sys.exit(main())
