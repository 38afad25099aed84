"""What every ``ctpipe`` command module shares: the common options, the exit-code epilog, adding
a (sub)command, the run context, --json output, time parsing and progress bars.

Command modules import this module only (never each other, never main). Nothing here imports
Beam, TensorFlow or the config models at import time: ``ctpipe --help`` and the read-only
commands stay fast.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from core.errors import EXIT_CODES, ConfigError


def exit_codes_epilog(note: str = "") -> str:
    """The ``exit codes:`` block of every --help, rendered from core.errors.EXIT_CODES."""
    lines = ["exit codes:"] + [f"  {code:<4d}{meaning}" for code, meaning in EXIT_CODES.items()]
    return "\n".join(lines) + (f"\n{note}" if note else "")


def common_parent() -> argparse.ArgumentParser:
    """Options every command accepts, before or after the subcommand (defaults filled in by main)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="YAML config file (default: ./ctpipe.yaml if present, else built-in defaults)")
    common.add_argument("--runner-config", default=argparse.SUPPRESS,
                        help="Beam pipeline options file (default: config's runner_config, "
                             "runner_configs/direct.yaml); read only by commands that run a pipeline")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable JSON on stdout")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="full tracebacks and Beam/TF logs")
    return common


def add_command(subparsers, name: str, help_text: str, handler=None, *, description: str | None = None,
                epilog_note: str = "", uses_storage: bool = True) -> argparse.ArgumentParser:
    """Add command ``name`` (or a command group when ``handler`` is None) with the common options,
    its description and the exit-code epilog.

    ``handler(args, ctx)`` returns the exit code. ``uses_storage``: the command reads or writes the
    configured storage root or registry, so object stores there need Beam's FileSystems set up
    first (``Context.register_object_stores``).
    """
    parser = subparsers.add_parser(name, parents=[common_parent()], help=help_text,
                                   description=description or help_text,
                                   epilog=exit_codes_epilog(epilog_note),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    if handler is not None:
        parser.set_defaults(handler=handler, uses_storage=uses_storage)
    return parser


def add_lock_timeout(parser: argparse.ArgumentParser) -> None:
    """``--lock-timeout SECONDS``: how long a writing command waits for the storage root's lease."""
    from pipeline.lease import DEFAULT_LOCK_TIMEOUT_S

    parser.add_argument("--lock-timeout", type=float, default=DEFAULT_LOCK_TIMEOUT_S, metavar="SECONDS",
                        help="wait up to SECONDS for the storage root's lease when another ctpipe command holds "
                             f"it (default {DEFAULT_LOCK_TIMEOUT_S:.0f}; 0: refuse at once, naming the holder); "
                             "see docs/LEASE.md")


def check_lock_timeout(args) -> float:
    if args.lock_timeout < 0:
        raise ConfigError(f"--lock-timeout must be >= 0 seconds, not {args.lock_timeout}")
    return args.lock_timeout


def add_group(subparsers, name: str, help_text: str, dest: str, *, description: str | None = None):
    """Add a command group (``windows``, ``registry``...); returns the subparsers of its actions."""
    group = add_command(subparsers, name, help_text, description=description)
    return group.add_subparsers(dest=dest, required=True, metavar="ACTION")


class Context:
    """What a handler gets besides its arguments: the config (loaded on first use) and Beam's
    pipeline options (built on first use: only commands that run a pipeline, or that touch an
    object store, import Beam)."""

    def __init__(self, args):
        self.args = args
        self._config = None
        self._options = None

    @property
    def config(self):
        """The effective configuration (``--config`` FILE, ./ctpipe.yaml, or the defaults)."""
        if self._config is None:
            from pipeline.config import load_config

            self._config = load_config(self.args.config)
        return self._config

    @property
    def options(self):
        """Beam PipelineOptions from ``--runner-config`` or the config's runner_config; building
        them also configures Beam FileSystems (S3 endpoint, credentials)."""
        if self._options is None:
            from pipeline.options import pipeline_options
            from pipeline.stores import object_store_flags

            self._options = pipeline_options(self.args.runner_config or self.config.runner_config,
                                             object_store_flags=object_store_flags(self.config))
        return self._options

    def explain_runner_error(self, exc: BaseException):
        """A CtpipeError for what ``exc`` says about the runner the options name (a job server that
        never answered), or None; None too when no options were built."""
        if self._options is None:
            return None
        from pipeline.options import explain_runner_error

        return explain_runner_error(exc, self._options, self.args.runner_config or self.config.runner_config)

    def register_object_stores(self, *uris: tuple[str, str | None]) -> None:
        """When any of ``uris``, (what, uri) pairs (default: every store the config names: storage root, input files,
        registry, serving data) is on an object store: set up Beam FileSystems with the config's
        object_store settings and ask each bucket once within its timeouts (ObjectStoreError, exit
        code 8, when one does not answer, refuses the credentials or is missing). Local paths
        need nothing and import nothing."""
        from pipeline.stores import check_uris, configured_uris, uses_object_store

        config = self.config
        named = list(uris) or configured_uris(config)
        if uses_object_store(named):
            check_uris(config, named)  # before Beam loads (seconds): an unreachable store fails at once
            _ = self.options


def emit(args, data, text_lines) -> None:
    """Print ``data`` as JSON with --json, else the human lines."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        for line in text_lines:
            print(line)


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
