"""Shared fixtures: real local services (tests/services.py) and small synthetic data sets."""
from __future__ import annotations

import datetime as dt
import os

import pytest

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

pytest_plugins = ["tests.services"]

SERVICE_FIXTURES = {"s3_server", "kafka_broker", "kafka_broker_factory", "mlflow_launch", "mlflow_server",
                    "pushgateway", "prometheus", "flink_cluster", "kube_api"}
"""Fixtures of tests/services.py that start a real local service."""
KUBE_FIXTURES = {"kube_api"}
"""Fixtures that need the kube-apiserver built by scripts/fetch_kube.sh (marker ``kube``)."""


def pytest_collection_modifyitems(config, items):
    """``integration``: every test that uses a real local service, found by its fixtures (so the
    marker cannot be forgotten). ``slow`` is set per module (``pytestmark``) on tests that run
    whole pipelines, trainings or tools. ``make test-fast`` runs what is neither. ``kube``: every test
    of the real kube-apiserver, also found by its fixture (``make test-kube`` runs them)."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if KUBE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kube)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def make_events(tmp_path):
    """Write synthetic JSONL events; returns (glob, GenStats)."""
    from pipeline import synthetic

    def make(hours=3, rows_per_hour=300, name="events", **kw):
        out = tmp_path / name
        malformed = kw.get("malformed_per_hour", 2)
        oor = kw.get("out_of_range_per_hour", 1)
        stats = synthetic.write_jsonl(str(out), synthetic.generate(dt.datetime(2026, 11, 27), hours, rows_per_hour,
                                                                   **kw),
                                      rows_per_hour=rows_per_hour + malformed + oor)
        return str(out / "*.jsonl"), stats

    return make


@pytest.fixture
def direct_options():
    from pipeline.options import pipeline_options

    return pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml"))


@pytest.fixture
def base_config(tmp_path):
    from pipeline.config import config_from_dict

    def build(events_glob, **sections):
        data = {"storage": {"root": str(tmp_path / "store")},
                "source": {"files": {"uri": events_glob}},
                "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"}}
        data.update(sections)
        return config_from_dict(data)

    return build
