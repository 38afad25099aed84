"""Beam PipelineOptions from a runner_configs/*.yaml file.

A runner config is a YAML mapping of Beam option names to values (``runner: DirectRunner``,
``flink_master: host:8081``...). ``${VAR}`` references are expanded from the environment so
project ids and endpoints never have to be committed; a missing variable is an error naming it.
"""
from __future__ import annotations

import os
import re
import sys

import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from core.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def installed_runner_configs_parent() -> str:
    """Where an installed ctpipe keeps ``runner_configs/`` (setup.py's data_files)."""
    return os.path.join(sys.prefix, "share", "ctpipe")


def resolve_runner_config(path: str) -> str:
    """Find ``path`` as given (relative to the current directory), else relative to the ctpipe
    source tree (an editable install), else among the runner configs installed with ctpipe, so
    ``runner_configs/direct.yaml`` works from any directory, a scheduler's temporary one included."""
    if os.path.exists(path):
        return path
    if not os.path.isabs(path):
        for parent in (_HERE, installed_runner_configs_parent()):
            candidate = os.path.join(parent, path)
            if os.path.exists(candidate):
                return candidate
    raise ConfigError(f"runner config {path!r} does not exist (looked in the current directory {os.getcwd()}, "
                      f"{_HERE} and {installed_runner_configs_parent()}); pass --runner-config FILE "
                      "(see runner_configs/direct.yaml)")


def _expand(value, key: str):
    if isinstance(value, str):
        def sub(match):
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"runner config key {key!r} refers to ${{{name}}}, which is not set; "
                                  f"export {name}=...")
            return os.environ[name]
        return _VAR.sub(sub, value)
    return value


def runner_flags(path: str) -> list[str]:
    """``--key=value`` flags of a runner config file (lists become repeated flags)."""
    path = resolve_runner_config(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"runner config {path!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"runner config {path!r} must be a mapping of Beam option names to values")
    flags = []
    for key, value in data.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            item = _expand(item, key)
            if item is None:
                continue
            if isinstance(item, bool):
                if item:
                    flags.append(f"--{key}")
                continue
            flags.append(f"--{key}={item}")
    return flags


def pipeline_options(runner_config: str, extra_flags: list[str] | None = None) -> PipelineOptions:
    """PipelineOptions from the runner config plus extra flags (extra flags win); also makes
    FileSystems use them (S3 endpoint and credentials for s3:// storage roots)."""
    flags = runner_flags(runner_config) + list(extra_flags or [])
    options = PipelineOptions(flags)
    FileSystems.set_options(options)
    return options
