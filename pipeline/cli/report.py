"""``ctpipe report``: one static HTML page about the sealed windows' data quality (pipeline/report.py)."""
from __future__ import annotations

import os

from core import storage
from core.errors import EXIT_OK, ConfigError
from pipeline.cli.common import add_command, emit


def register(subparsers) -> None:
    p = add_command(subparsers, "report", "write a static HTML data-quality report", run,
                    description="One static HTML page (no network assets) about the sealed windows: records and "
                                "dead-letter rate per window by verdict, drift scores over windows, and feature "
                                "distributions of a window against its predecessor; and the model history: candidate metrics and "
                                "gate decisions of every training run, registry versions, production alias moves.")
    p.add_argument("--out", help="HTML file to write (default: <storage root>/report.html for a local root)")
    p.add_argument("--window", help="window whose distributions are shown against its predecessor "
                                    "(default: the newest)")


def run(args, ctx) -> int:
    from pipeline.report import render_report
    from pipeline.stores import open_registry

    root = ctx.config.storage.root
    out = args.out
    if out is None:
        if not storage.is_local(root):
            raise ConfigError(f"the storage root {root} is remote: pass --out FILE for the report")
        out = os.path.join(root, "report.html")
    config = ctx.config
    text = render_report(root, args.window, open_registry(config), config.registry.model_name)
    with open(out, "w", encoding="utf-8") as handle:
        handle.write(text)
    emit(args, {"out": os.path.abspath(out), "bytes": len(text)}, [f"wrote {out} ({len(text)} bytes)"])
    return EXIT_OK
