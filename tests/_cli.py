"""Helpers shared by the CLI tests: every parser of the ``ctpipe`` command."""
from __future__ import annotations

import argparse

from pipeline.cli.main import build_parser


def all_parsers(parser=None, prefix=()):
    """(argv prefix, parser) of ctpipe and of every (sub)command under it."""
    parser = parser or build_parser()
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, prefix + (name,))


def parses_as_ctpipe(argv) -> bool:
    """True when the real ``ctpipe`` parser accepts ``argv`` (subcommand, flags and values)."""
    from pipeline.cli.main import build_parser

    try:
        build_parser().parse_args(list(argv))
    except SystemExit:
        return False
    return True
