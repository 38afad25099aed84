"""``ctpipe stream``: Kafka in exactly-once micro-batch cycles into sealed windows (pipeline/stream.py)."""
from __future__ import annotations

import datetime as dt
import json

from pipeline.cli.common import add_command, add_lock_timeout, check_lock_timeout

CYCLE_RECORDS_DEFAULT_TEXT = "500,000"
"""pipeline.stream.DEFAULT_MAX_RECORDS_PER_CYCLE as --help shows it (not imported: that module loads
Beam; tests/pipeline/test_cli_main.py checks the two agree)."""


def register(subparsers) -> None:
    p = add_command(
        subparsers, "stream", "read Kafka in exactly-once micro-batch cycles and seal event-time windows", run,
        description="Exactly-once micro-batches from source.kafka into sealed windows (bounded mode).\n\n"
                    "Each cycle reads [checkpoint, end offset fixed at cycle start) per partition, writes window "
                    "parts, seals the windows the watermark passed, then checkpoints and commits the consumer "
                    "group's offsets.\n\n"
                    "--unbounded instead submits the unbounded graph to a streaming runner (Flink): the runner "
                    "reads Kafka, its checkpoints make it exactly-once, and the command stays attached to the job.",
        epilog_note="A non-zero exit leaves a consistent store: rerun the same command to continue from the "
                    "checkpoint.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cycles", type=int, default=None, metavar="N", help="run N cycles, then exit (default 1)")
    mode.add_argument("--until-idle", action="store_true",
                      help="record the topic's end offsets, run cycles up to them, then exit (for schedulers: "
                           "ends under continuous production too; records produced later wait for the next run)")
    mode.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                      help="run forever, one cycle every SECONDS (serves metrics.port while running)")
    mode.add_argument("--unbounded", action="store_true",
                      help="submit the unbounded graph to the streaming runner of --runner-config (e.g. "
                           "runner_configs/flink-local-streaming.yaml) and stay attached until the job ends: "
                           "Kafka read inside the runner (source.kafka.expansion_service), event-time windows with "
                           "window.allowed_lateness, late records as new window versions, offsets committed on "
                           "checkpoints; serves metrics.port while attached; Ctrl-C or SIGTERM cancels the job")
    p.add_argument("--seal-at-end", action="store_true",
                   help="with --until-idle or --cycles: after the last cycle, seal the windows still open as they "
                        "are and move the watermark past them; later records for them follow window.late_data "
                        "(new_version: they reseal the window as v<N+1>)")
    p.add_argument("--max-records-per-cycle", type=int, default=None, metavar="N",
                   help=f"read at most N records per cycle, shared by the partitions (default "
                        f"{CYCLE_RECORDS_DEFAULT_TEXT}); smaller cycles seal sooner and replay less after a crash")
    add_lock_timeout(p)


def print_cycle(result, as_json: bool) -> None:
    """One line per finished cycle (a JSON object per line with --json)."""
    if as_json:
        print(json.dumps(result.to_json(), sort_keys=True, default=str), flush=True)
        return
    if result.idle:
        print(f"cycle {result.cycle}: no new records", flush=True)
        return
    sealed = ", ".join(f"{w['window_id']} v{w['version']}{'' if w['written'] else ' (unchanged)'}"
                       for w in result.sealed) or "none"
    wm = (dt.datetime.fromtimestamp(result.watermark_ms / 1000, tz=dt.timezone.utc).isoformat()
          if result.watermark_ms is not None else "none")
    print(f"cycle {result.cycle}{' (replayed)' if result.replayed else ''}: {result.records} records, "
          f"{result.parts} parts, {result.dead_letters} dead letters, {result.late_records} late; "
          f"watermark {wm}; sealed {sealed}", flush=True)


def print_seal_at_end(outcome, as_json: bool) -> None:
    """The outcome of ``--seal-at-end`` (a JSON object with ``seal_at_end`` with --json)."""
    if as_json:
        print(json.dumps({"seal_at_end": outcome}, sort_keys=True, default=str), flush=True)
        return
    sealed = ", ".join(f"{w['window_id']} v{w['version']}{'' if w['written'] else ' (unchanged)'}"
                       for w in outcome["sealed"]) or "none (no open window)"
    print(f"sealed at end: {sealed}", flush=True)


def run_unbounded(args, ctx) -> int:
    from pipeline.unbounded import run_unbounded as submit

    if args.seal_at_end or args.max_records_per_cycle is not None:
        from core.errors import ConfigError

        raise ConfigError("--seal-at-end and --max-records-per-cycle are micro-batch options; --unbounded seals "
                          "windows when the watermark passes them and reads as the runner schedules")

    job = {}

    def submitted(job_id: str) -> None:
        job["id"] = job_id
        if args.json:
            print(json.dumps({"job_id": job_id, "state": "SUBMITTED"}), flush=True)
        else:
            print(f"unbounded job {job_id} submitted; attached until it ends (Ctrl-C cancels it)", flush=True)

    state = submit(ctx.config, ctx.options, on_submitted=submitted)
    if args.json:
        print(json.dumps({"job_id": job.get("id"), "state": state}), flush=True)
    else:
        print(f"unbounded job ended: {state}", flush=True)
    return 0


def run(args, ctx) -> int:
    if args.unbounded:
        return run_unbounded(args, ctx)
    kafka = ctx.config.source.kafka
    if kafka is not None and kafka.topic:  # credentials, TLS and the address first, before the heavy imports
        from transforms.kafka.client import client_kwargs
        from transforms.kafka.source import check_connection

        check_connection(client_kwargs(kafka))
    from pipeline.stream import run_stream

    cycles = args.cycles
    if cycles is None and not args.until_idle and args.interval is None:
        cycles = 1
    limits = {} if args.max_records_per_cycle is None else {"max_records_per_cycle": args.max_records_per_cycle}
    run_stream(ctx.config, ctx.options, cycles=cycles, until_idle=args.until_idle, interval_s=args.interval,
               on_cycle=lambda result: print_cycle(result, args.json), lock_timeout_s=check_lock_timeout(args),
               seal_at_end=args.seal_at_end, on_seal=lambda outcome: print_seal_at_end(outcome, args.json), **limits)
    return 0
