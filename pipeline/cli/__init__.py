"""The ``ctpipe`` command line: one module per command group, all on top of ``common``.

``main`` (pipeline/cli/main.py) builds the parser and maps errors to the exit codes of
core.errors.EXIT_CODES; ``common`` holds the common options, --json output and the run context;
gen, backfill, train, stream, windows, registry, schema, report, demo and config each register
their own (sub)commands and import ``common`` only. Importing this package loads no Beam,
TensorFlow or TFX library: ``ctpipe --help`` and the read-only commands stay fast.

``pipeline.cli.main`` is the entry-point function (``ctpipe = pipeline.cli:main``); the module
of the same name stays importable as ``from pipeline.cli.main import build_parser``.
"""
from pipeline.cli.main import main

__all__ = ["main"]
