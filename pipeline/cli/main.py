"""``ctpipe``: the parser, the run of one command, and errors -> exit codes (core.errors.EXIT_CODES).

Each command group lives in its own module of this package with a ``register(subparsers)``;
building the parser imports those modules, which import nothing heavy (a handler imports what
it runs when it runs).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, CtpipeError, find_in_chain
from pipeline.cli import backfill, config, controller, demo, gc, gen, registry, report, schema, stream, train, windows
from pipeline.cli.common import Context, common_parent, exit_codes_epilog
from pipeline.tempdirs import process_temp_dir

COMMAND_MODULES = (gen, backfill, stream, train, controller, windows, schema, report, registry, gc, config, demo)
"""In the order ``ctpipe --help`` lists them."""

_COMMON_DEFAULTS = (("config", None), ("runner_config", None), ("json", False), ("debug", False))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctpipe", parents=[common_parent()], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Continuous-training data pipeline: events -> validated, versioned TFRecord windows -> "
                    "gated models. Every command has --help.",
        epilog=exit_codes_epilog())
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def _quiet_logs(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in ("apache_beam", "tensorflow", "absl", "kafka", "tensorflow_transform"):
        # Beam logs a worker's traceback at ERROR before re-raising it; ctpipe prints one line instead.
        logging.getLogger(name).setLevel(level if debug else logging.CRITICAL)


def main(argv=None) -> int:
    """Run one ``ctpipe`` command; returns its exit code (argparse exits 2 itself on bad usage)."""
    args = build_parser().parse_args(argv)
    for name, default in _COMMON_DEFAULTS:
        if not hasattr(args, name):
            setattr(args, name, default)
    _quiet_logs(args.debug)
    ctx = None
    try:
        with process_temp_dir():  # this process's temp files (and TF's, Beam's) go when it ends
            ctx = Context(args)
            if args.uses_storage:
                ctx.register_object_stores()
            return args.handler(args, ctx)
    except KeyboardInterrupt:
        print("ctpipe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout stopped (`ctpipe config show | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # one clear line, documented exit code
        cause = find_in_chain(exc, CtpipeError) or (ctx.explain_runner_error(exc) if ctx is not None else None)
        if args.debug or cause is None:
            import traceback

            traceback.print_exc()
        if cause is None:
            print(f"ctpipe: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_INTERNAL
        print(f"ctpipe: error: {str(cause).split(' [while running')[0]}", file=sys.stderr)
        return cause.exit_code


if __name__ == "__main__":
    sys.exit(main())
