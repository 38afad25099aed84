"""runner_configs/*.yaml render into Beam pipeline options that Beam itself accepts.

The flags come from the CLI's own renderer (pipeline.options.runner_flags): ${ENV_VAR}
references are expanded (an unset variable is an error), then `key: v` -> `--key=v`,
`key: true` -> `--key`, `key: false` -> no flag, `key: [a, b]` -> `--key=a --key=b`. Every option
name must be one that Beam 2.68's Python SDK parses, or be on the explicit allow-list of Java-side
Flink options the portable runner forwards.
"""
import os
import re
from pathlib import Path
from unittest import mock

import pytest
import yaml
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
    _BeamArgumentParser,
)

from core.errors import ConfigError
from pipeline.options import runner_flags

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "runner_configs"

TEST_ENV = {
    "CTPIPE_FLINK_MASTER": "ctpipe-flink-rest.ctpipe.svc:8081",
    "CTPIPE_FLINK_JOB_ENDPOINT": "ctpipe-flink-jobserver.ctpipe.svc:8099",
    "CTPIPE_FLINK_ARTIFACT_ENDPOINT": "ctpipe-flink-jobserver.ctpipe.svc:8098",
    "CTPIPE_BEAM_JOB_ENDPOINT": "127.0.0.1:41001",
    "CTPIPE_BEAM_WORKER_POOL_ENDPOINT": "127.0.0.1:50000",
    "CTPIPE_GCP_PROJECT": "ctpipe-test-project",
    "CTPIPE_GCP_REGION": "europe-west1",
    "CTPIPE_GCS_BUCKET": "ctpipe-test-bucket",
    "CTPIPE_DATAFLOW_SA": "ctpipe-worker@ctpipe-test-project.iam.gserviceaccount.com",
    "CTPIPE_WORKER_IMAGE": "europe-docker.pkg.dev/ctpipe-test-project/ctpipe/beam-worker:0.1.0",
    "CTPIPE_DATAFLOW_SUBNET": "regions/europe-west1/subnetworks/ctpipe",
}

# Options of the Java FlinkPipelineOptions (runners/flink/.../FlinkPipelineOptions.java) that the
# Python SDK does not declare. Beam's portable runner keeps unknown options
# (get_all_options(retain_unknown_options=True)) and the job server maps snake_case to camelCase.
CHECKPOINT_OPTIONS = {
    "checkpointing_interval",
    "checkpointing_mode",
    "checkpoint_timeout_millis",
    "min_pause_between_checkpoints",
    "externalized_checkpoints_enabled",
    "retain_externalized_checkpoints_on_cancellation",
}
JAVA_FLINK_OPTIONS = CHECKPOINT_OPTIONS | {"number_of_execution_retries", "execution_retry_delay"}
FLINK_CONFIGS = ["flink.yaml", "flink-streaming.yaml"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load(name, env=TEST_ENV):
    """(the YAML as written, the flags the CLI renders from it with ``env`` as the environment)."""
    raw = yaml.safe_load((CONFIG_DIR / name).read_text())
    assert isinstance(raw, dict) and raw, f"{name} must be a non-empty mapping"
    with mock.patch.dict(os.environ, env, clear=True):
        return raw, runner_flags(str(CONFIG_DIR / name))


def beam_parser():
    """The parser PipelineOptions.get_all_options builds: every option the Python SDK knows."""
    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {str(c): c for c in PipelineOptions.__subclasses__()}
    for cls in classes.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def unknown_option_names(flags):
    _, unknown = beam_parser().parse_known_args(flags)
    return {u[2:].split("=", 1)[0] for u in unknown if u.startswith("--")}


LOCAL_FLINK_CONFIGS = ["flink-local.yaml", "flink-local-streaming.yaml", "flink-local-streaming-pool.yaml"]
ALL_CONFIGS = ["direct.yaml", *FLINK_CONFIGS, *LOCAL_FLINK_CONFIGS, "dataflow.yaml"]


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_values_are_scalars_or_scalar_lists(name):
    raw, _ = load(name)
    for key, value in raw.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", key), f"{name}: {key!r} is not a snake_case option"
        if isinstance(value, list):
            assert value and all(isinstance(v, (str, int, float)) for v in value), key
        else:
            assert isinstance(value, (str, int, float, bool)), f"{name}: {key} has {value!r}"


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_option_is_known(name):
    _, cfg = load(name)
    unknown = unknown_option_names(cfg)
    allowed = JAVA_FLINK_OPTIONS if name in (*FLINK_CONFIGS, *LOCAL_FLINK_CONFIGS) else set()
    assert unknown <= allowed, f"{name}: options Beam does not know: {sorted(unknown - allowed)}"


def test_typo_is_caught():
    """The check above can fail: a misspelt option is reported, not silently dropped."""
    assert unknown_option_names(["--runner=FlinkRunner", "--flink_mastr=x:8081"]) == {"flink_mastr"}
    assert unknown_option_names(["--direct_num_worker=2"]) == {"direct_num_worker"}


def test_missing_env_var_is_an_error():
    with pytest.raises(ConfigError, match="CTPIPE_GCP_PROJECT"):
        load("dataflow.yaml", env={})


def test_direct():
    _, cfg = load("direct.yaml")
    opts = PipelineOptions(cfg)
    assert opts.view_as(StandardOptions).runner == "DirectRunner"
    direct = opts.view_as(DirectOptions)
    assert direct.direct_running_mode == "in_memory"
    assert int(direct.direct_num_workers) == 1


@pytest.mark.parametrize("name", FLINK_CONFIGS)
def test_flink(name):
    raw, cfg = load(name)
    opts = PipelineOptions(cfg)
    assert opts.view_as(StandardOptions).runner == "FlinkRunner"
    flink = opts.view_as(FlinkRunnerOptions)
    assert flink.flink_master == TEST_ENV["CTPIPE_FLINK_MASTER"]
    assert flink.flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert flink.parallelism == 4 and flink.max_parallelism >= flink.parallelism
    portable = opts.view_as(PortableOptions)
    assert portable.job_endpoint == TEST_ENV["CTPIPE_FLINK_JOB_ENDPOINT"]
    # The job server advertises its bind address (0.0.0.0) for artifacts: the driver must be
    # given a reachable one.
    assert portable.artifact_endpoint == TEST_ENV["CTPIPE_FLINK_ARTIFACT_ENDPOINT"]
    assert portable.environment_type in ("EXTERNAL", "DOCKER")
    assert portable.environment_config
    assert opts.view_as(SetupOptions).setup_file == "/app/setup.py"
    # Site-specific addresses come from the environment, not the file.
    for key in ("flink_master", "job_endpoint", "artifact_endpoint"):
        assert _VAR.fullmatch(raw[key]), f"{name}: {key} must be a ${{VAR}} reference"


def test_flink_bounded_graphs_run_in_batch_mode_without_checkpoint_options():
    raw, cfg = load("flink.yaml")
    assert not PipelineOptions(cfg).view_as(StandardOptions).streaming
    assert not CHECKPOINT_OPTIONS & set(raw), "Flink ignores checkpoint options in batch mode"


def test_flink_streaming_checkpoints():
    _, cfg = load("flink-streaming.yaml")
    opts = PipelineOptions(cfg)
    assert opts.view_as(StandardOptions).streaming
    # The Java-side options survive into what the portable runner sends to the job server.
    sent = opts.get_all_options(retain_unknown_options=True)
    assert int(sent["checkpointing_interval"]) == 60000
    assert sent["checkpointing_mode"] in ("EXACTLY_ONCE", "AT_LEAST_ONCE")
    assert int(sent["min_pause_between_checkpoints"]) < int(sent["checkpoint_timeout_millis"])
    assert sent["externalized_checkpoints_enabled"] is True


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_checkpoint_options_only_where_they_apply(name):
    """Flink checkpoints exist only in streaming mode: a file that sets them must set streaming."""
    raw, _ = load(name)
    if CHECKPOINT_OPTIONS & set(raw):
        assert raw.get("streaming") is True, f"{name} sets checkpoint options but not streaming: true"


def test_flink_configs_target_the_same_cluster():
    batch, _ = load("flink.yaml")
    streaming, _ = load("flink-streaming.yaml")
    for key in ("runner", "flink_master", "flink_version", "job_endpoint", "artifact_endpoint",
                "max_parallelism", "environment_type", "environment_config", "setup_file", "pickle_library"):
        assert batch[key] == streaming[key], key


def test_flink_local():
    """The local cluster's config: the job server and cluster from the variables services.sh exports."""
    raw, cfg = load("flink-local.yaml")
    opts = PipelineOptions(cfg)
    assert opts.view_as(StandardOptions).runner == "FlinkRunner"
    assert not opts.view_as(StandardOptions).streaming
    flink = opts.view_as(FlinkRunnerOptions)
    assert flink.flink_master == TEST_ENV["CTPIPE_FLINK_MASTER"]
    assert flink.flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert flink.parallelism == 2
    portable = opts.view_as(PortableOptions)
    assert portable.job_endpoint == TEST_ENV["CTPIPE_BEAM_JOB_ENDPOINT"]
    assert portable.environment_type == "LOOPBACK"
    assert raw["flink_master"] == "${CTPIPE_FLINK_MASTER}" and raw["job_endpoint"] == "${CTPIPE_BEAM_JOB_ENDPOINT}"
    services = (ROOT / "scripts" / "services.sh").read_text()
    for var in set(_VAR.findall((CONFIG_DIR / "flink-local.yaml").read_text())):
        assert f"{var}=" in services, f"scripts/services.sh does not export {var}"


def test_flink_local_streaming():
    """The unbounded graph's local config: the same cluster and job server as flink-local.yaml, in
    streaming mode with checkpoints (what tests/pipeline/test_flink_stream.py runs)."""
    _, batch = load("flink-local.yaml")
    raw, cfg = load("flink-local-streaming.yaml")
    opts = PipelineOptions(cfg)
    assert opts.view_as(StandardOptions).streaming
    assert "--checkpointing_interval=3000" in cfg and "--checkpointing_mode=EXACTLY_ONCE" in cfg
    for key in ("runner", "flink_master", "flink_version", "job_endpoint", "parallelism", "environment_type"):
        assert [f for f in cfg if f.startswith(f"--{key}=")] == [f for f in batch if f.startswith(f"--{key}=")], key


def test_flink_local_streaming_pool():
    """The worker-pool variant differs from flink-local-streaming.yaml only in where the Python
    workers run."""
    _, loopback = load("flink-local-streaming.yaml")
    _, pool = load("flink-local-streaming-pool.yaml", env={**TEST_ENV, "CTPIPE_BEAM_WORKER_POOL_ENDPOINT": "127.0.0.1:5"})

    def rest(flags):
        return [f for f in flags if not f.startswith(("--environment_type=", "--environment_config="))]
    assert rest(pool) == rest(loopback)
    assert "--environment_type=EXTERNAL" in pool and "--environment_config=127.0.0.1:5" in pool


def test_dataflow(monkeypatch):
    # GoogleCloudOptions.validate also *warns* when the buckets have a soft-delete policy, by
    # calling GCS; offline that call retries for minutes. It is a network lookup, not a check of
    # the options, so it is switched off here.
    monkeypatch.setattr(GoogleCloudOptions, "_warn_if_soft_delete_policy_enabled",
                        lambda self, arg_name: None)
    raw, cfg = load("dataflow.yaml")
    opts = PipelineOptions(cfg)
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    gcp = opts.view_as(GoogleCloudOptions)
    assert gcp.project == TEST_ENV["CTPIPE_GCP_PROJECT"]
    assert gcp.region == TEST_ENV["CTPIPE_GCP_REGION"]
    assert gcp.temp_location == "gs://ctpipe-test-bucket/dataflow/temp"
    assert gcp.staging_location.startswith("gs://ctpipe-test-bucket/")
    assert gcp.service_account_email == TEST_ENV["CTPIPE_DATAFLOW_SA"]
    assert gcp.enable_streaming_engine is True
    assert "app=ctpipe" in gcp.labels
    worker = opts.view_as(WorkerOptions)
    assert worker.sdk_container_image == TEST_ENV["CTPIPE_WORKER_IMAGE"]
    assert worker.max_num_workers >= worker.num_workers
    assert worker.use_public_ips is False
    assert "use_runner_v2" in opts.view_as(DebugOptions).experiments
    # Beam's own option validator for Dataflow (project id format, gs:// paths, region).
    from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    assert PipelineOptionsValidator(opts, DataflowRunner()).validate() == []
    # No site-specific literal: these keys must be environment references.
    for key in ("project", "region", "service_account_email", "sdk_container_image", "subnetwork"):
        assert _VAR.fullmatch(raw[key]), f"dataflow.yaml {key} must be a ${{VAR}} reference"
    # Every referenced variable is documented in the file's header comment.
    text = (CONFIG_DIR / "dataflow.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for var in set(_VAR.findall(text)):
        assert var in header, f"{var} is used but not documented in dataflow.yaml"
