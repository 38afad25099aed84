"""run_training with ``registry.uri: mlflow+http://127.0.0.1:PORT`` against a real MLflow server.

The server (sqlite store, started by scripts/mlflow_server.sh through the fixtures of
tests/training/test_mlflow_registry.py) boots while the backfill runs. Two trainings push v1 and v2 and
move ``production``; ``ctpipe registry rollback --json`` then moves it back to v1 in one call.
"""
from __future__ import annotations

import datetime as dt
import json
import os

import pytest
import yaml

from training.registry import open_registry

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LINEAGE_KEYS = ("windows", "transform_fingerprint", "schema_version", "config_hash", "code_version", "metrics",
                "training_duration_s", "warm_start", "eval_windows", "run_id")


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory, mlflow_launch):
    from pipeline import synthetic
    from pipeline.backfill import run_backfill
    from pipeline.config import config_from_dict
    from pipeline.controller import run_training
    from pipeline.options import pipeline_options

    base = tmp_path_factory.mktemp("train-mlflow")
    synthetic.write_jsonl(str(base / "events"), synthetic.generate(dt.datetime(2026, 11, 27), 2, 500),
                          rows_per_hour=503)
    data = {"storage": {"root": str(base / "store")},
            "source": {"files": {"uri": str(base / "events" / "*.jsonl")}},
            "training": {"epochs": 3, "batch_size": 64, "backup_dir": str(base / "backup")},
            "gate": {"slice_feature": "firmware",
                     # v2 is the same data warm-started (one more epoch): allow sampling noise on ~200 examples.
                     "thresholds": [{"metric": "auc", "lower_bound": 0.65, "change_absolute": -0.1}],
                     "trusted": {"max_regression": 0.1}}}
    run_backfill(config_from_dict(dict(data, registry={"uri": str(base / "unused")})),
                 pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml")), None, None)
    uri, _services = request.getfixturevalue("mlflow_server")
    data["registry"] = {"uri": "mlflow+" + uri, "model_name": "sensors-ct"}
    config = config_from_dict(data)
    first = run_training(config)
    # the same inputs again would be a retry (reused, nothing pushed): one more epoch makes another run
    second = run_training(config.replace(training=config.training.replace(epochs=config.training.epochs + 1)))
    config_path = base / "ctpipe.yaml"
    config_path.write_text(yaml.safe_dump(data))
    return config, str(config_path), first, second


def test_run_training_pushes_and_promotes_through_mlflow(trained):
    config, _path, first, second = trained
    assert first["blessing"]["blessed"] and first["version"] == 1, first["blessing"]["checks"]
    assert second["blessing"]["blessed"] and second["version"] == 2, second["blessing"]["checks"]
    assert second["warm_start"]["used"] and second["baseline_version"] == 1
    registry = open_registry(config.registry.uri)
    assert registry.get_alias("sensors-ct", "production") == 2
    assert [h["version"] for h in registry.alias_history("sensors-ct", "production")][-2:] == [1, 2]


def test_lineage_in_mlflow_is_complete(trained):
    config, _path, _first, second = trained
    stored = open_registry(config.registry.uri).get("sensors-ct", 2)
    lineage = stored.lineage
    assert all(key in lineage for key in LINEAGE_KEYS), sorted(set(LINEAGE_KEYS) - set(lineage))
    assert [(w["window_id"], w["version"]) for w in lineage["windows"]] == [
        ("20261127T0000Z", 1), ("20261127T0100Z", 1)]
    assert lineage["warm_start"]["used"] and lineage["training"]["warm_start"] == lineage["warm_start"]
    assert lineage["metrics"]["auc"] == stored.metrics["auc"] == second["metrics"]["auc"]
    assert lineage["training_duration_s"] > 0
    assert sorted(stored.blessing["candidate_metrics"]["slices"]) == ["firmware=v1", "firmware=v2", "firmware=v3"]


def test_cli_rollback_moves_production_back_in_one_call(trained, capsys):
    from pipeline.cli import main

    config, path, _first, _second = trained
    capsys.readouterr()
    assert main(["registry", "rollback", "--config", path, "--json", "--reason", "bad canary"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"model": "sensors-ct", "alias": "production", "from": 2, "to": 1}
    registry = open_registry(config.registry.uri)  # a fresh client: the move is on the server
    assert registry.get_alias("sensors-ct", "production") == 1
    assert [h["version"] for h in registry.alias_history("sensors-ct", "production")] == [1]
    assert main(["registry", "list", "--config", path, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["versions"]
    assert {r["version"]: r["aliases"] for r in rows} == {1: ["production"], 2: []}
