"""MlflowRegistry against a real MLflow server (sqlite store) started by scripts/mlflow_server.sh.

The shared behaviour of tests/training/registry_behaviour.py runs here with ``backend`` bound to MLflow;
the tests below check the MLflow mapping itself.
"""
from __future__ import annotations

import glob
import os
import subprocess

import pytest

from tests.services import MLFLOW_SCRIPT
from tests.training.registry_behaviour import (
    BEHAVIOURS,
    Backend,
    fresh_model_name,
    overwrite_or_delete,
    push,
    run_behaviour,
    save_tiny_model,
)
from training.registry import ModelVersion, open_registry
from training.registry.mlflow import MlflowRegistry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _launch_mlflow_first(mlflow_launch):
    """Autouse, so the server boots while the SavedModel fixture imports TensorFlow."""


def _run_artifact_dir(services: str, reg, mv: ModelVersion) -> str:
    run_id = reg.client.get_model_version(mv.model, str(mv.version)).run_id
    [path] = glob.glob(os.path.join(services, "mlflow", "artifacts", "*", run_id,
                                    "artifacts", "model"))
    return path


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory) -> str:
    return save_tiny_model(str(tmp_path_factory.mktemp("savedmodel") / "model"))


@pytest.fixture
def model() -> str:
    return fresh_model_name()


@pytest.fixture
def backend(mlflow_server) -> Backend:
    uri, services = mlflow_server
    reg = open_registry("mlflow+" + uri)

    def tamper(mv: ModelVersion, rel: str, data: bytes | None) -> None:
        overwrite_or_delete(os.path.join(_run_artifact_dir(services, reg, mv), rel), data)

    return Backend(reg, tamper, lambda: open_registry("mlflow:" + uri))


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_behaviour(behaviour, backend, model, saved_model_dir, tmp_path):
    run_behaviour(behaviour, backend, model, saved_model_dir, tmp_path)


def test_push_is_a_run_and_a_model_version(backend, model, saved_model_dir):
    reg = backend.registry
    mv = push(reg, model, saved_model_dir, auc=0.75)
    version = reg.client.get_model_version(model, "1")
    assert version.tags["ctpipe.blessed"] == "true"
    assert len(version.tags["ctpipe.checksums_sha256"]) == 64
    run = reg.client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["auc"] == 0.75
    assert run.data.metrics["loss.train"] == 0.1
    assert run.data.params["transform"] == "abc123"
    assert run.data.params["windows"] == '["20261127T0100Z/v1"]'
    assert mv.uri == f"models:/{model}/1"


def test_aliases_are_mlflow_aliases(backend, model, saved_model_dir):
    reg = backend.registry
    push(reg, model, saved_model_dir)
    push(reg, model, saved_model_dir)
    reg.promote(model, 2)
    assert reg.client.get_model_version_by_alias(model, "production").version == "2"
    # An alias moved outside ctpipe: the live alias wins, the history is reconciled.
    reg.client.set_registered_model_alias(model, "production", "1")
    assert reg.get_alias(model, "production") == 1
    assert [h["version"] for h in reg.alias_history(model, "production")] == [1]
    with pytest.raises(Exception, match="no earlier blessed version"):
        reg.rollback(model)


def test_open_registry_dispatch_and_script_restart_is_idempotent(mlflow_server, mlflow_launch):
    uri, _ = mlflow_server
    assert isinstance(open_registry("mlflow+" + uri), MlflowRegistry)
    assert isinstance(open_registry("mlflow:" + uri), MlflowRegistry)
    _, _, env, _ = mlflow_launch
    again = subprocess.run([MLFLOW_SCRIPT, "start"], env=env, capture_output=True, text=True,
                           timeout=30)
    assert again.returncode == 0 and again.stdout.strip() == f"CTPIPE_MLFLOW_URI={uri}"
