"""Pytest plugin: real loopback services for integration tests (no mocks of the broker).

Register it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.services"]`` (or pass
``-p tests.services``). Fixtures:

- ``s3_server`` (session): a moto S3 server; ``.endpoint_url``, ``.access_key``, ``.secret_key``,
  ``.region``, ``.client()`` and ``.create_bucket(name=None) -> str``.
- ``kafka_broker`` (session): a Tansu broker with memory storage; ``.bootstrap`` and
  ``.client_kwargs``.
- ``kafka_broker_factory`` (function): ``start(storage="memory"|"s3")`` returns a ``ManagedBroker``
  that can be ``kill()``-ed and ``restart()``-ed on the same port and, for s3, the same bucket.
  Every broker it started is stopped at teardown.
- ``kafka_topic`` (function): a fresh, unique topic name per test, so tests never share data.
- ``mlflow_launch`` / ``mlflow_server`` (session): an MLflow server (sqlite store) started by
  scripts/mlflow_server.sh; ``mlflow_server`` is (tracking uri, services dir) once it is ready.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests import _procs


@dataclass(frozen=True)
class S3Server:
    """Connection details of a running local S3 server."""

    endpoint_url: str
    access_key: str = _procs.S3_ACCESS_KEY
    secret_key: str = _procs.S3_SECRET_KEY
    region: str = _procs.S3_REGION

    def client(self):
        """A boto3 S3 client bound to this server."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name unless given) and return its name."""
        name = name or f"ctpipe-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@dataclass(frozen=True)
class KafkaBroker:
    """Connection details of a running Kafka-compatible broker."""

    bootstrap: str

    @property
    def client_kwargs(self) -> dict:
        """kafka-python keyword arguments for a plaintext connection to this broker."""
        return {"bootstrap_servers": self.bootstrap}


class ManagedBroker:
    """A Tansu broker this test controls: kill it (crash) and restart it on the same port/storage."""

    def __init__(self, service: _procs.Service, storage_engine: str):
        self._service = service
        self.storage_engine = storage_engine

    @property
    def bootstrap(self) -> str:
        return f"{_procs.HOST}:{self._service.port}"

    @property
    def client_kwargs(self) -> dict:
        return {"bootstrap_servers": self.bootstrap}

    @property
    def running(self) -> bool:
        return self._service.running

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; returns once its port is closed."""
        self._service.kill()

    def stop(self) -> None:
        """Stop the broker with SIGTERM."""
        self._service.stop()

    def restart(self) -> None:
        """Start the broker again on the same port and storage; returns once it accepts connections."""
        if self._service.running:
            self._service.kill()
        self._service.start()


class BrokerFactory:
    """Starts brokers for one test and stops all of them at teardown."""

    def __init__(self, log_dir: Path, request: pytest.FixtureRequest):
        self._log_dir = log_dir
        self._request = request
        self._brokers: list[ManagedBroker] = []

    def start(self, storage: str = "memory") -> ManagedBroker:
        """Start a broker with ``storage`` "memory" or "s3" (a fresh bucket on ``s3_server``)."""
        env: dict[str, str] = {}
        if storage == "memory":
            engine = "memory://tansu/"
        elif storage == "s3":
            s3: S3Server = self._request.getfixturevalue("s3_server")
            engine = f"s3://{s3.create_bucket()}/"
            env = _procs.s3_env(s3.endpoint_url)
        else:
            raise ValueError(f"storage must be 'memory' or 's3', not {storage!r}")
        name = f"broker-{len(self._brokers)}"
        service = _procs.tansu_service(self._log_dir, storage_engine=engine, env=env, name=name)
        broker = ManagedBroker(service.start(), engine)
        self._brokers.append(broker)
        return broker

    def close(self) -> None:
        for broker in self._brokers:
            broker.stop()


@pytest.fixture(scope="session")
def services_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the log file of every service the fixtures start."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def s3_server(services_log_dir: Path) -> Iterator[S3Server]:
    service = _procs.moto_service(services_log_dir).start()
    try:
        yield S3Server(endpoint_url=f"http://{_procs.HOST}:{service.port}")
    finally:
        service.stop()


@pytest.fixture(scope="session")
def kafka_broker(services_log_dir: Path) -> Iterator[KafkaBroker]:
    service = _procs.tansu_service(services_log_dir).start()
    try:
        yield KafkaBroker(bootstrap=f"{_procs.HOST}:{service.port}")
    finally:
        service.stop()


@pytest.fixture
def kafka_broker_factory(request: pytest.FixtureRequest, services_log_dir: Path,
                         ) -> Iterator[BrokerFactory]:
    log_dir = services_log_dir / uuid.uuid4().hex[:8]
    factory = BrokerFactory(log_dir, request)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def kafka_topic() -> str:
    """A topic name no other test uses."""
    return f"ctpipe-test-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- MLflow


MLFLOW_SCRIPT = str(Path(__file__).resolve().parents[1] / "scripts" / "mlflow_server.sh")


@pytest.fixture(scope="session")
def mlflow_launch(tmp_path_factory):
    """Launches ``mlflow_server.sh start`` without waiting; stops the server at teardown."""
    services = tmp_path_factory.mktemp("services")
    env = {**os.environ, "CTPIPE_SERVICES_DIR": str(services),
           "MLFLOW_BIN": os.path.join(os.path.dirname(sys.executable), "mlflow"), "CTPIPE_MLFLOW_START_TIMEOUT_S": "180"}
    out = services / "start.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([MLFLOW_SCRIPT, "start"], env=env, stdout=f, stderr=subprocess.STDOUT)
    yield proc, services, env, out
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    stopped = subprocess.run([MLFLOW_SCRIPT, "stop"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not (services / "mlflow.pid").exists()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_launch) -> tuple[str, str]:
    """(tracking uri, services dir) of the running server; waits (bounded) for readiness."""
    proc, services, _, out = mlflow_launch
    rc = proc.wait(timeout=240)
    assert rc == 0, out.read_text()
    env = dict(line.split("=", 1) for line in
               (services / "mlflow.env").read_text().splitlines() if "=" in line)
    return env["CTPIPE_MLFLOW_URI"], str(services)
