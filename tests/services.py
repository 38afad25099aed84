"""Pytest plugin: real loopback services for integration tests (no mocks of the broker).

Register it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.services"]`` (or pass
``-p tests.services``). Fixtures:

- ``s3_server`` (session): a moto S3 server; ``.endpoint_url``, ``.access_key``, ``.secret_key``,
  ``.region``, ``.client()`` and ``.create_bucket(name=None) -> str``.
- ``kafka_broker`` (session): a real Apache Kafka 4.x broker (single-node KRaft, the pinned jars of
  jvm/engines.lock) started by ``scripts/services.sh start kafka``: ``.bootstrap`` and
  ``.client_kwargs`` (PLAINTEXT), plus for security tests ``.sasl_ssl_bootstrap``, ``.ca_file``,
  ``.user``, ``.password_file``, ``.password`` and ``.sasl_client_kwargs`` (SASL_SSL,
  SCRAM-SHA-512, hostname checking on).
- ``kafka_broker_factory`` (function): ``start()`` returns a ``ManagedBroker`` of its own (same
  attributes) that can be ``kill()``-ed (SIGKILL) and ``restart()``-ed on the same ports and data
  dir (Kafka's own log dir: what was acknowledged survives). Every broker it started is stopped at
  teardown.
- ``kafka_topic`` (function): a fresh, unique topic name per test, so tests never share data.
- ``flink_cluster`` (session): a local Apache Flink 1.19 session cluster (a JobManager and two
  TaskManagers, each its own JVM; the pinned jars of jvm/engines.lock) and Beam's Flink job server
  pointed at it, started by ``scripts/services.sh start flink`` / ``start beam-job-server``:
  ``.master`` (REST host:port), ``.rest_url``, ``.job_endpoint``, ``.runner_env`` (the variables
  runner_configs/flink-local.yaml reads), ``.rest(path)`` (JSON of a REST GET) and
  ``.taskmanager_pids()``.
- ``mlflow_launch`` / ``mlflow_server`` (session): an MLflow server (sqlite store) started by
  scripts/mlflow_server.sh; ``mlflow_server`` is (tracking uri, services dir) once it is ready.
- ``pushgateway`` (function): a Prometheus Pushgateway (Debian's prometheus-pushgateway);
  ``.address`` (host:port, what ``metrics.pushgateway`` takes), ``.url``, ``.stop()`` for an outage,
  ``.start()`` to bring it back on the same port.
- ``prometheus`` (function): ``start(targets, rule_files=())`` runs a real Prometheus that scrapes
  ``targets`` every second with honor_labels (as deploy/prometheus/prometheus.yml does) and
  evaluates ``rule_files`` every second; returns a ``Prometheus`` with ``.query(expr)`` (the
  HTTP API's instant query) and ``.wait_for(expr)`` (polls until the query returns series).
- ``kube_api`` (session): a real kube-apiserver on etcd (RBAC on, service-account tokens), started
  by ``scripts/services.sh start kube`` (binaries from scripts/fetch_kube.sh): a
  ``tests._kube.KubeApi`` with ``.server``, ``.ca_file``, ``.admin_token_file``,
  ``.request(method, path, body, token=None)``, ``.create_namespace(name)``,
  ``.service_account_token_file(namespace, account, where)`` and ``.lease_uri(...)``.
- ``java_producer`` (function): ``start(bootstrap, topic, compression="none",
  transactional_id=None)`` returns a ``tests._kafka_java.JavaProducer``: Apache Kafka's own Java
  client (compressed and transactional batches written by another client than kafka-python).

Without ``java`` the Kafka fixtures fail with that reason (they are ``integration`` tests, which
``make test-fast`` leaves out).
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


class KafkaBroker:
    """Connection details of a running Apache Kafka broker (from its kafka.env)."""

    def __init__(self, service: _procs.KafkaService):
        self._service = service

    def _env(self, name: str) -> str:
        return self._service.env[name]

    @property
    def bootstrap(self) -> str:
        """host:port of the PLAINTEXT listener."""
        return self._env("CTPIPE_KAFKA_BOOTSTRAP")

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """host:port of the SASL_SSL listener (SCRAM-SHA-512; certificate for localhost/127.0.0.1)."""
        return self._env("CTPIPE_KAFKA_SASL_SSL_BOOTSTRAP")

    @property
    def sasl_mechanism(self) -> str:
        return self._env("CTPIPE_KAFKA_SASL_MECHANISM")

    @property
    def ca_file(self) -> str:
        """PEM file of the throw-away CA that signed the broker certificate."""
        return self._env("CTPIPE_KAFKA_CA_FILE")

    @property
    def user(self) -> str:
        """The SCRAM user the broker was formatted with."""
        return self._env("CTPIPE_KAFKA_USER")

    @property
    def password_file(self) -> str:
        """File (mode 0600) holding the SCRAM user's password."""
        return self._env("CTPIPE_KAFKA_PASSWORD_FILE")

    @property
    def password(self) -> str:
        with open(self.password_file, encoding="utf-8") as fh:
            return fh.read().strip()

    @property
    def data_dir(self) -> str:
        return self._env("CTPIPE_KAFKA_DATA_DIR")

    @property
    def log_path(self) -> Path:
        return self._service.log_path

    @property
    def client_kwargs(self) -> dict:
        """kafka-python keyword arguments for a plaintext connection to this broker."""
        return {"bootstrap_servers": self.bootstrap}

    @property
    def sasl_client_kwargs(self) -> dict:
        """kafka-python keyword arguments for SASL_SSL + SCRAM-SHA-512 (hostname checking on)."""
        return {"bootstrap_servers": self.sasl_ssl_bootstrap, "security_protocol": "SASL_SSL",
                "sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.user,
                "sasl_plain_password": self.password, "ssl_cafile": self.ca_file, "ssl_check_hostname": True}


class ManagedBroker(KafkaBroker):
    """A broker this test controls: kill it (crash) and restart it on the same ports and data dir."""

    @property
    def running(self) -> bool:
        return self._service.running

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; returns once it is gone and its ports are closed."""
        self._service.kill()

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM)."""
        self._service.stop()

    def restart(self) -> None:
        """Start the broker again on the same ports and data dir; returns once it answers requests."""
        if self._service.running:
            self._service.kill()
        self._service.start()


def _require_java() -> None:
    reason = _procs.java_missing_reason()
    if reason is None:
        return
    raise RuntimeError(f"{reason}; install openjdk-17-jdk-headless and maven (see README, 'Tests'); "
                       "`make test-fast` leaves the Kafka (integration) tests out")


class BrokerFactory:
    """Starts brokers for one test and stops all of them at teardown."""

    def __init__(self, state_dir: Path):
        self._state_dir = state_dir
        self._brokers: list[ManagedBroker] = []

    def start(self) -> ManagedBroker:
        """Start a new broker with its own ports, data dir, certificates and SCRAM user."""
        _require_java()
        service = _procs.KafkaService(self._state_dir / f"broker-{len(self._brokers)}")
        broker = ManagedBroker(service.start())
        self._brokers.append(broker)
        return broker

    def close(self) -> None:
        for broker in self._brokers:
            broker.stop()


@pytest.fixture(scope="session")
def services_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the state and log files of every service the fixtures start."""
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def s3_server(services_log_dir: Path) -> Iterator[S3Server]:
    service = _procs.moto_service(services_log_dir).start()
    try:
        yield S3Server(endpoint_url=f"http://{_procs.HOST}:{service.port}")
    finally:
        service.stop()


class FlinkCluster:
    """Connection details of the running local Flink cluster and its Beam job server."""

    def __init__(self, service: _procs.FlinkService):
        self._service = service

    @property
    def master(self) -> str:
        """host:port of the JobManager's REST endpoint (Beam's flink_master)."""
        return self._service.env["CTPIPE_FLINK_MASTER"]

    @property
    def rest_url(self) -> str:
        return self._service.env["CTPIPE_FLINK_REST_URL"]

    @property
    def job_endpoint(self) -> str:
        """host:port of Beam's Flink job server (the portable Job API)."""
        return self._service.env["CTPIPE_BEAM_JOB_ENDPOINT"]

    @property
    def runner_env(self) -> dict[str, str]:
        """The environment variables runner_configs/flink-local.yaml refers to."""
        return {"CTPIPE_FLINK_MASTER": self.master, "CTPIPE_BEAM_JOB_ENDPOINT": self.job_endpoint}

    @property
    def state_dir(self) -> Path:
        return self._service.state_dir

    def rest(self, path: str):
        """The JSON answer of a GET on the cluster's REST API (e.g. ``/jobs/overview``)."""
        import json
        import urllib.request

        with urllib.request.urlopen(f"{self.rest_url}{path}", timeout=10) as resp:
            return json.load(resp)

    def taskmanager_pids(self) -> list[int]:
        """Process ids of the TaskManager JVMs that are alive."""
        return self._service.taskmanager_pids()


@pytest.fixture(scope="session")
def flink_cluster(services_log_dir: Path) -> Iterator[FlinkCluster]:
    _require_java()
    service = _procs.FlinkService(services_log_dir / "flink").start()
    try:
        yield FlinkCluster(service)
    finally:
        service.stop()


@pytest.fixture(scope="session")
def kafka_broker(services_log_dir: Path) -> Iterator[KafkaBroker]:
    _require_java()
    service = _procs.KafkaService(services_log_dir / "kafka").start()
    try:
        yield KafkaBroker(service)
    finally:
        service.stop()


@pytest.fixture
def kafka_broker_factory(services_log_dir: Path) -> Iterator[BrokerFactory]:
    factory = BrokerFactory(services_log_dir / uuid.uuid4().hex[:8])
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="session")
def kafka_java_classes(services_log_dir: Path) -> tuple[Path, str]:
    """(compiled tests/java classes, the pinned Kafka classpath), compiled once per session."""
    from tests._kafka_java import compile_producer

    _require_java()
    classpath = _procs.kafka_classpath()
    return compile_producer(services_log_dir / "java", classpath), classpath


@pytest.fixture
def java_producer(kafka_java_classes, services_log_dir: Path):
    from tests._kafka_java import JavaProducer

    classes, classpath = kafka_java_classes
    started: list[JavaProducer] = []

    def start(bootstrap: str, topic: str, compression: str = "none",
              transactional_id: str | None = None) -> JavaProducer:
        log = services_log_dir / "java" / f"producer-{topic}-{len(started)}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        producer = JavaProducer(classes, classpath, bootstrap, topic, compression, transactional_id, log)
        started.append(producer)
        return producer

    yield start
    for producer in started:  # a test that failed midway leaves its producer running
        if producer.proc.poll() is None:
            producer.proc.kill()
            producer.proc.wait(timeout=30)


@pytest.fixture
def kafka_topic() -> str:
    """A topic name no other test uses."""
    return f"ctpipe-test-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- Prometheus


def _system_binary(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if not path:
        raise RuntimeError(f"{name} is not installed; `make test` installs it (scripts/install_system_deps.sh)")
    return path


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[_procs.Service]:
    """A Pushgateway on a free loopback port (``.address``, ``.url``); ``.stop()`` / ``.start()``
    for an outage on the same port; stopped at teardown."""
    port = _procs.free_port()
    # Debian's build persists to /var/lib/prometheus/pushgateway.data by default, which every
    # Pushgateway on the machine would share (and reload): keep this one's metrics in memory.
    service = _procs.Service("pushgateway", [_system_binary("prometheus-pushgateway"),
                                             f"--web.listen-address={_procs.HOST}:{port}",
                                             "--persistence.file="],
                             port, tmp_path / "pushgateway.log")
    service.address = f"{_procs.HOST}:{port}"
    service.url = f"http://{service.address}"
    yield service.start()
    service.stop()
class Prometheus:
    """A running Prometheus server; queries go through its HTTP API."""

    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list:
        """The result of an instant query (a list of series); raises on a bad expression."""
        import json
        import urllib.error
        import urllib.parse
        import urllib.request

        url = f"{self.url}/api/v1/query?query={urllib.parse.quote(expr)}"
        try:
            body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus refused {expr!r}: {exc.read().decode(errors='replace')}") from exc
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout_s: float = 60.0) -> list:
        """Poll until ``expr`` returns series (scrapes and rule evaluations run every second)."""
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.25)  # polling the API for the next 1 s scrape / evaluation, bounded above


@pytest.fixture
def prometheus(tmp_path: Path):
    """``start(targets, rule_files=())`` -> a ready Prometheus; every server started is stopped."""
    import time
    import urllib.error
    import urllib.request

    import yaml

    started: list[_procs.Service] = []

    def start(targets: list[str], rule_files=()) -> Prometheus:
        port = _procs.free_port()
        home = tmp_path / f"prometheus-{len(started)}"
        home.mkdir()
        config = home / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in rule_files],
            "scrape_configs": [{"job_name": "ctpipe-test", "honor_labels": True,
                                "static_configs": [{"targets": list(targets)}]}]}))
        service = _procs.Service("prometheus", [_system_binary("prometheus"), f"--config.file={config}",
                                                f"--web.listen-address={_procs.HOST}:{port}",
                                                f"--storage.tsdb.path={home / 'tsdb'}"],
                                 port, home / "prometheus.log").start()
        started.append(service)
        server = Prometheus(f"http://{_procs.HOST}:{port}")
        deadline = time.monotonic() + 60
        while True:  # the port opens before the TSDB is ready (503 until then)
            try:
                urllib.request.urlopen(f"{server.url}/-/ready", timeout=5).read()
                return server
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Prometheus on port {port} never became ready; see {home / 'prometheus.log'}")
                time.sleep(0.1)  # polling readiness, bounded above

    yield start
    for service in started:
        service.stop()


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


@pytest.fixture(scope="session")
def kube_api(services_log_dir: Path):
    from tests._kube import KubeApi, KubeService

    service = KubeService(services_log_dir / "kube").start()
    try:
        yield KubeApi(service.env, service.state_dir)
    finally:
        service.stop()
