"""Code version recorded in manifests and lineage: package version plus git commit when known."""
from __future__ import annotations

import functools
import os
import subprocess

PACKAGE_VERSION = "0.1.0"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return PACKAGE_VERSION
    return f"{PACKAGE_VERSION}+g{sha}" if sha else PACKAGE_VERSION
