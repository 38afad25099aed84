"""``ctpipe demo``: generate data, backfill, train and summarise, all under one work directory."""
from __future__ import annotations

from core.errors import EXIT_OK
from pipeline.cli.common import add_command, emit


def register(subparsers) -> None:
    p = add_command(subparsers, "demo", "generate data, backfill, train and list the results under --workdir", run,
                    description="The whole thin path on embedded defaults: synthetic events, a backfill, a "
                                "training run and a summary, all under --workdir (storage, input and registry "
                                "settings of the config are not used). The workdir then holds a ctpipe.yaml "
                                "for the other commands.",
                    uses_storage=False)
    p.add_argument("--workdir", default="./demo-work", help="where data, windows and the registry go "
                                                           "(default ./demo-work)")
    p.add_argument("--hours", type=int, default=6, help="event-time hours to generate (default 6)")
    p.add_argument("--rows-per-hour", type=int, default=2000, help="valid events per hour (default 2000)")


def run(args, ctx) -> int:
    from pipeline.demo import run_demo

    summary = run_demo(args.workdir, ctx.options, hours=args.hours, rows_per_hour=args.rows_per_hour)
    emit(args, summary, summary["lines"])
    return EXIT_OK
