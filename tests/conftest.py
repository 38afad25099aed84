"""Shared fixtures: real local services (tests/services.py) and small synthetic data sets."""
from __future__ import annotations

import datetime as dt
import os

import pytest

import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

pytest_plugins = ["tests.services"]

SERVICE_FIXTURES = {"s3_server", "kafka_broker", "kafka_broker_factory", "mlflow_launch", "mlflow_server",
                    "pushgateway", "prometheus", "flink_cluster"}
"""Fixtures of tests/services.py that start a real local service."""


def pytest_collection_modifyitems(config, items):
    """``integration``: every test that uses a real local service, found by its fixtures (so the
    marker cannot be forgotten). ``slow`` is set per module (``pytestmark``) on tests that run
    whole pipelines, trainings or tools. ``make test-fast`` runs what is neither."""
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    # Longest first: `make test` runs the files on two workers (pytest-xdist, --dist loadfile, each
    # file on one worker), which hand out files in this order; starting with the longest and
    # ending with the short ones keeps both workers busy to the end. The order of the tests
    # inside a file is kept.
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        if path in LONGEST_FILES:
            return LONGEST_FILES.index(path)
        return len(LONGEST_FILES) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)


# The files of the suite that take longest, longest first (`make test`'s --durations on this
# 2-core machine, 2026-12-01: 2 to 7 minutes each); a file missing here only runs later.
LONGEST_FILES = (
    "tests/pipeline/test_stream_e2e.py",
    "tests/pipeline/test_flink_stream.py",
    "tests/training/test_distributed_training.py",
    "tests/pipeline/test_flink.py",
    "tests/pipeline/test_runner_independence.py",
    "tests/deploy/test_airflow_dag.py",
    "tests/pipeline/test_one_writer.py",
    "tests/training/test_range_analysis.py",
    "tests/deploy/test_monitoring_series.py",
    "tests/pipeline/test_stream_until_idle.py",
    "tests/pipeline/test_poisoned_data.py",
    "tests/pipeline/test_controller_loop.py",
)

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
