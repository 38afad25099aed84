"""pipeline/stores.py and its users: the config's object_store section is the one place the S3
endpoint and region come from (Beam options of every command, the file registry, MLflow's
environment), credentials are refused wherever a file could hold them, and tf.Transform's scratch
leaves s3:// roots. No service needed."""
from __future__ import annotations

import argparse
import os

import pytest

from core.errors import ConfigError
from pipeline.config import config_from_dict

ENDPOINT = "http://127.0.0.1:9000"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(**sections):
    data = {"storage": {"root": "s3://bucket/store"}, "registry": {"uri": "s3://bucket/registry"},
            "object_store": {"s3": {"endpoint_url": ENDPOINT, "region": "eu-west-1"}, "connect_timeout": "2s",
                             "read_timeout": "7s", "max_attempts": 4}}
    data.update(sections)
    return config_from_dict(data)


@pytest.mark.parametrize("section, fragment", [
    ({"s3": {"endpoint_url": "http://user:s3cr3t@host:9000"}}, "holds credentials"),
    ({"s3": {"endpoint_url": "minio:9000"}}, "is not an http:// or https:// URL"),
    ({"s3": {"access_key_id": "x"}}, "unknown key 'object_store.s3.access_key_id'"),
    ({"connect_timeout": "0s"}, "object_store.connect_timeout: '0s' must be longer than zero"),
    ({"max_attempts": 0}, "object_store.max_attempts"),
])
def test_bad_object_store_settings_are_named_and_never_echo_a_secret(section, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        config_from_dict({"object_store": section})
    assert "s3cr3t" not in str(info.value)


def test_settings_come_from_the_config_section():
    from pipeline.stores import object_store_flags, settings

    s = settings(_config())
    assert (s.s3_endpoint_url, s.s3_region, s.connect_timeout_s, s.read_timeout_s, s.max_attempts) == (
        ENDPOINT, "eu-west-1", 2.0, 7.0, 4)
    assert object_store_flags(_config()) == [f"--s3_endpoint_url={ENDPOINT}", "--s3_region_name=eu-west-1"]


def test_every_command_s_beam_options_carry_the_endpoint_and_no_credentials(tmp_path, monkeypatch):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import S3Options

    from pipeline.cli.common import Context

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-env")
    config = tmp_path / "ctpipe.yaml"
    config.write_text(f"object_store:\n  s3: {{endpoint_url: '{ENDPOINT}', region: eu-west-1}}\n")
    ctx = Context(argparse.Namespace(config=str(config), runner_config=None))
    s3 = ctx.options.view_as(S3Options)
    assert (s3.s3_endpoint_url, s3.s3_region_name) == (ENDPOINT, "eu-west-1")
    assert s3.s3_access_key_id is None and s3.s3_secret_access_key is None and s3.s3_session_token is None
    assert "from-the-env" not in repr(ctx.options.get_all_options())
    assert FileSystems._pipeline_options is ctx.options  # core/storage.py reads through these


@pytest.mark.parametrize("key", ["s3_access_key_id", "s3_secret_access_key", "s3_session_token"])
def test_a_runner_config_with_credentials_is_refused(key, tmp_path):
    from pipeline.options import runner_flags

    path = tmp_path / "runner.yaml"
    path.write_text(f"runner: DirectRunner\n{key}: value-that-must-not-be-here\n")
    with pytest.raises(ConfigError, match=f"sets {key}: credentials never go in a file") as info:
        runner_flags(str(path))
    assert "value-that-must-not-be-here" not in str(info.value)


@pytest.mark.parametrize("key, field", [("s3_endpoint_url", "object_store.s3.endpoint_url"),
                                        ("s3_region_name", "object_store.s3.region")])
def test_a_runner_config_with_the_endpoint_points_at_the_one_place(key, field, tmp_path):
    from pipeline.options import runner_flags

    path = tmp_path / "runner.yaml"
    path.write_text(f"runner: DirectRunner\n{key}: x\n")
    with pytest.raises(ConfigError, match=f"set {field} in ctpipe.yaml instead"):
        runner_flags(str(path))


def test_the_file_registry_on_s3_gets_the_configured_endpoint():
    from apache_beam.options.pipeline_options import S3Options

    from pipeline.stores import open_registry

    registry = open_registry(_config())
    s3 = registry._fs._options.view_as(S3Options)
    assert (s3.s3_endpoint_url, s3.s3_region_name, s3.s3_access_key_id) == (ENDPOINT, "eu-west-1", None)


def test_mlflow_s_artifact_client_gets_the_configured_endpoint(monkeypatch):
    from pipeline.stores import open_registry

    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    open_registry(_config(registry={"uri": "mlflow+http://127.0.0.1:1"}))
    assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == ENDPOINT and os.environ["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_tf_transform_scratch_leaves_s3_roots_only(tmp_path):
    from pipeline.specs import transform_scratch

    assert transform_scratch(config_from_dict({"storage": {"root": str(tmp_path)}}), "r1") == str(tmp_path / "tmp" / "r1")
    assert transform_scratch(config_from_dict({"storage": {"root": "gs://b/s"}}), "r1") == "gs://b/s/tmp/r1"
    s3 = transform_scratch(_config(), "r1")
    assert not s3.startswith("s3://") and s3.endswith(os.path.join("ctpipe-tft", "r1"))
    shared = _config(transform={"scratch_dir": str(tmp_path / "shared")})
    assert transform_scratch(shared, "r1") == str(tmp_path / "shared" / "r1")


def test_a_cluster_runner_on_an_s3_root_needs_a_shared_transform_scratch(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.specs import check_transform_scratch

    check_transform_scratch(_config(), PipelineOptions(["--runner=DirectRunner"]))
    check_transform_scratch(_config(), PipelineOptions(["--runner=pipeline.forked_workers.ForkedDirectRunner"]))
    with pytest.raises(ConfigError, match="set transform.scratch_dir to a directory every worker shares"):
        check_transform_scratch(_config(), PipelineOptions(["--runner=FlinkRunner"]))
    check_transform_scratch(_config(transform={"scratch_dir": str(tmp_path)}), PipelineOptions(["--runner=FlinkRunner"]))
