"""``ctpipe train`` during a Pushgateway outage, and its retry: the metrics export failure is one
warning and leaves the exit code to the gate's decision; the retry of the same inputs trains
nothing and pushes no second version (the registry directory is checked, not ctpipe's view of it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline import metrics
from tests._procs import HOST, free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WARNING = "warning: could not push metrics"


def test_push_to_an_unreachable_gateway_warns_once_and_returns_false(capsys, monkeypatch):
    monkeypatch.setattr(metrics, "_warned", set())
    gateway = f"{HOST}:{free_port()}"  # nothing listens there: connection refused
    assert metrics.push(gateway, "unit") is False
    assert metrics.push(gateway, "unit") is False
    err = capsys.readouterr().err
    assert err.count(WARNING) == 1 and gateway in err and "metrics.pushgateway" in err
    assert metrics.push(None, "unit") is True


def test_training_run_id_changes_with_each_input():
    from pipeline.controller import training_run_id

    class W:
        def __init__(self, wid, version, digest):
            self.window_id, self.version, self.manifest = wid, version, {"content_digest": digest}

    windows = [W("20261127T0000Z", 1, "a"), W("20261127T0100Z", 2, "b")]
    base = training_run_id(windows, "fp", "cfg", "code")
    assert base == training_run_id(list(windows), "fp", "cfg", "code") and base.startswith("train-")
    assert len({base, training_run_id(windows[:1], "fp", "cfg", "code"),
                training_run_id([windows[0], W("20261127T0100Z", 3, "b")], "fp", "cfg", "code"),
                training_run_id(windows, "fp2", "cfg", "code"), training_run_id(windows, "fp", "cfg2", "code"),
                training_run_id(windows, "fp", "cfg", "code2")}) == 6


def test_a_retry_completes_a_missed_promotion_but_never_undoes_a_rollback(tmp_path):
    """The in-memory registry (a unit test of the reuse logic): a blessed version whose alias move
    never happened is promoted by the retry; one that production was rolled back from is not."""
    import uuid

    from pipeline.controller import reused_outcome, version_of_run
    from training.registry import open_registry

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "saved_model.pb").write_bytes(b"not a real model: the registry only stores it")
    registry = open_registry(f"memory://retry-{uuid.uuid4().hex}")
    blessed = {"blessed": True, "checks": []}

    def push(run_id):
        return registry.push("sensors", str(model_dir), metrics={"auc": 0.9}, blessing=blessed,
                             lineage={"run_id": run_id, "windows": [], "transform_fingerprint": "fp"}).version

    first = push("train-a")  # the attempt stopped after the push, before the alias move
    out = reused_outcome(registry, "sensors", version_of_run(registry, "sensors", "train-a"), True, "chief:0")
    assert out["reused"] and out["version"] == first and out["promoted_on_reuse"]
    assert registry.get_alias("sensors", "production") == first
    second = push("train-b")
    registry.promote("sensors", second, alias="production")
    assert registry.rollback("sensors", alias="production") == first
    out = reused_outcome(registry, "sensors", version_of_run(registry, "sensors", "train-b"), True, "chief:0")
    assert out["version"] == second and not out["promoted_on_reuse"]
    assert registry.get_alias("sensors", "production") == first
    assert version_of_run(registry, "sensors", "train-c") is None


def _committed_versions(registry_dir: str, model: str) -> list:
    base = os.path.join(registry_dir, model, "versions")
    return sorted(int(n) for n in os.listdir(base) if os.path.exists(os.path.join(base, n, "COMMITTED.json")))


def _ctpipe(*argv, config):
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *argv, "--config", config, "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=900)


@pytest.mark.slow
def test_pushgateway_outage_keeps_the_exit_code_and_the_retry_pushes_nothing(pushgateway, make_events, tmp_path):
    events_glob, _stats = make_events(hours=2, rows_per_hour=200)
    registry = str(tmp_path / "registry")
    config = tmp_path / "ctpipe.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"root": str(tmp_path / "store")},
        "source": {"files": {"uri": events_glob}},
        "registry": {"uri": registry, "model_name": "sensors"},
        "training": {"epochs": 1, "backup_dir": str(tmp_path / "backup")},
        "gate": {"thresholds": [{"metric": "example_count", "lower_bound": 1}]},
        "metrics": {"pushgateway": pushgateway.address},
    }))
    from pipeline.cli.main import main

    assert main(["backfill", "--config", str(config)]) == 0  # the windows to train on (in this process)
    pushgateway.stop()  # the outage
    first = _ctpipe("train", config=str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stderr.count(WARNING) == 1 and pushgateway.address in first.stderr
    summary = json.loads(first.stdout)
    assert summary["pushed"] and summary["version"] == 1 and summary["reused"] is False
    assert _committed_versions(registry, "sensors") == [1]

    pushgateway.start()  # back; the scheduler retries the task
    retry = _ctpipe("train", config=str(config))
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert WARNING not in retry.stderr
    again = json.loads(retry.stdout)
    assert again["reused"] is True and again["version"] == 1 and again["run_id"] == summary["run_id"]
    assert again["metrics"] == summary["metrics"] and again["windows"] == summary["windows"]
    assert _committed_versions(registry, "sensors") == [1]
    with open(os.path.join(registry, "sensors", "aliases", "production.json"), encoding="utf-8") as handle:
        assert json.load(handle)["version"] == 1
