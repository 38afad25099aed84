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
