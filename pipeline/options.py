"""Beam PipelineOptions from a runner_configs/*.yaml file.

A runner config is a YAML mapping of Beam option names to values (``runner: DirectRunner``,
``flink_master: host:8081``...). ``${VAR}`` references are expanded from the environment so
project ids and endpoints never have to be committed; a missing variable is an error naming it.
Relative paths resolve from any working directory (a scheduler's temporary one): the runner config
itself (``resolve_runner_config``) and the options that name local files (``setup_file: ./setup.py``,
``_resolve_path_option``), which are rendered as absolute paths.
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


# Beam options whose values are local files or folders that must exist when the job is submitted
# (a URL, e.g. a job-server jar on Maven Central, is left as it is; sdk_location also takes the
# keywords below). Beam reads them relative to the current directory, which a scheduler's task does
# not choose, so they are resolved here and passed on as absolute paths.
_PATH_KEYS = ("setup_file", "requirements_file", "extra_packages", "sdk_location", "flink_job_server_jar",
              "flink_conf_dir")
_PATH_KEYWORDS = {"sdk_location": ("default", "container")}


def _resolve_path_option(path: str, key: str, value):
    """``value`` of option ``key`` (from runner config ``path``) as an absolute path: relative to the
    current directory when it is there, else to the ctpipe source tree (``./setup.py`` of an
    editable install); a relative one found in neither is a ConfigError naming the option."""
    if (key not in _PATH_KEYS or not isinstance(value, str) or not value or os.path.isabs(value)
            or "://" in value or value in _PATH_KEYWORDS.get(key, ())):
        return value
    for parent in (os.getcwd(), _HERE):
        candidate = os.path.join(parent, value)
        if os.path.exists(candidate):
            return os.path.normpath(os.path.abspath(candidate))
    raise ConfigError(f"runner config {path!r} sets {key}: {value}, which does not exist relative to the current "
                      f"directory {os.getcwd()} or to the ctpipe sources {_HERE}; give an absolute path (the ctpipe "
                      "image keeps its sources in /app: /app/setup.py)")


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


FORKED_RUNNER = "pipeline.forked_workers.ForkedDirectRunner"
"""The every-core local runner (runner_configs/direct-multiprocess.yaml)."""

_SECRET_KEYS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token")
_OBJECT_STORE_KEYS = {"s3_endpoint_url": "object_store.s3.endpoint_url", "s3_region_name": "object_store.s3.region"}


def _check_key(path: str, key: str) -> None:
    """Credentials never sit in a runner config (runners also serialize options into the job);
    the S3 endpoint and region have one home, the config's object_store section, so that every
    command and client (not only Beam's) uses the same ones."""
    if key in _SECRET_KEYS:
        raise ConfigError(f"runner config {path!r} sets {key}: credentials never go in a file or a pipeline "
                          "option; remove it and export AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or mount "
                          "AWS_SHARED_CREDENTIALS_FILE) where ctpipe and its workers run")
    if key in _OBJECT_STORE_KEYS:
        raise ConfigError(f"runner config {path!r} sets {key}; set {_OBJECT_STORE_KEYS[key]} in ctpipe.yaml "
                          "instead (one place for every command and client) and remove it here")


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
        _check_key(path, str(key))
        values = value if isinstance(value, list) else [value]
        for item in values:
            item = _resolve_path_option(path, str(key), _expand(item, key))
            if item is None:
                continue
            if isinstance(item, bool):
                if item:
                    flags.append(f"--{key}")
                continue
            flags.append(f"--{key}={item}")
    return flags


def explain_runner_error(exc: BaseException, options: PipelineOptions, runner_config: str):
    """A ConfigError naming the runner config's ``job_endpoint`` when ``exc`` is Beam's portable
    runner giving up on a job server that never answered (``grpc.FutureTimeoutError`` after
    ``job_server_timeout`` seconds), else None. The CLI turns it into one line and exit code 2."""
    grpc = sys.modules.get("grpc")
    if grpc is None:
        return None
    from apache_beam.options.pipeline_options import PortableOptions

    from core.errors import find_in_chain

    portable = options.view_as(PortableOptions)
    if not portable.job_endpoint or find_in_chain(exc, grpc.FutureTimeoutError) is None:
        return None
    return ConfigError(f"Beam's job server at {portable.job_endpoint} (job_endpoint of runner config "
                       f"{runner_config!r}) did not answer within {portable.job_server_timeout} s "
                       "(job_server_timeout); start it (locally: `bash scripts/services.sh start beam-job-server`, "
                       "then CTPIPE_BEAM_JOB_ENDPOINT from `bash scripts/services.sh env`) or fix the address")


def pipeline_options(runner_config: str, extra_flags: list[str] | None = None,
                     object_store_flags: list[str] | None = None) -> PipelineOptions:
    """PipelineOptions from the runner config plus ``object_store_flags`` (the config's S3
    endpoint and region, ``pipeline.stores.object_store_flags``) and extra flags (extra flags win);
    also makes FileSystems use them (what core/storage.py reads and writes s3:// and gs:// with)."""
    flags = runner_flags(runner_config) + list(object_store_flags or []) + list(extra_flags or [])
    options = PipelineOptions(flags)
    FileSystems.set_options(options)
    if options.get_all_options().get("runner") == FORKED_RUNNER:
        from pipeline.forked_workers import warm_up

        warm_up()  # its helper imports TensorFlow on another core while this process builds the graph
    return options
