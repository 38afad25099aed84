"""The Java consumer properties of the unbounded read (transforms.kafka.client.java_consumer_config)
against the real SASL_SSL listener, in the Java client KafkaIO runs inside Flink (kafka-clients of
the beam-kafka-io section of jvm/engines.lock; tests/java/CtpipeTestConsumer.java).

tests/transforms/test_kafka_java_config.py checks the properties as text; here Kafka's own config
providers resolve them: ``sasl_password_env`` (``${env:VAR}``, set only in the Java process's
environment) and ``sasl_password_file`` (``${dir:DIR:FILE}``) both log in and read the topic, the
properties file holds neither password, a wrong password is refused, and the Java side checks the
broker's host name: a name that resolves to the broker (through a hosts file of the test's, Java's
``jdk.net.hosts.file``) but is not in its certificate is refused. (``127.1``, which the kafka-python
test uses, does not serve here: Java reads it as the IP address 127.0.0.1, which the certificate holds.)
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipeline.config import KafkaSourceConfig
from tests import _procs
from tests._kafka_java import JVM_OPTS, compile_java
from transforms.kafka.client import java_consumer_config
from transforms.kafka.produce import ensure_topic, produce

pytestmark = pytest.mark.integration

SOURCE = _procs.REPO / "tests" / "java" / "CtpipeTestConsumer.java"
USER_ENV = "CTPIPE_TEST_JAVA_KAFKA_USER"
PASSWORD_ENV = "CTPIPE_TEST_JAVA_KAFKA_PASSWORD"
N = 25


@pytest.fixture(scope="module")
def java_consumer(services_log_dir):
    """(class dir, classpath): CtpipeTestConsumer compiled against the beam-kafka-io jars."""
    done = subprocess.run(["bash", str(_procs.FETCH_ENGINES_SH), "--classpath", "beam-kafka-io"],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    classpath = done.stdout.strip()
    assert "org.apache.kafka.kafka-clients-3." in classpath  # the client Beam 2.62's KafkaIO runs
    return compile_java(SOURCE, services_log_dir / "java", classpath), classpath


@pytest.fixture
def filled_topic(kafka_broker, kafka_topic) -> str:
    kw = kafka_broker.sasl_client_kwargs
    ensure_topic(kw, kafka_topic, 2)
    assert produce(kw, kafka_topic, [(None, f"record-{i}".encode()) for i in range(N)]) == N
    return kafka_topic


def _properties(path: Path, props: dict) -> Path:
    """``props`` as a java.util.Properties file (backslashes escaped, the only special character
    in these values)."""
    path.write_text("".join(f"{k}={str(v).replace(chr(92), chr(92) * 2)}\n" for k, v in props.items()),
                    encoding="utf-8")
    return path


def _consume(java_consumer, props_file: Path, topic: str, env: dict,
             jvm: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    classes, classpath = java_consumer
    # The Java process gets only what a TaskManager would: PATH/JAVA_HOME and the variables named.
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "JAVA_HOME", "HOME", "LANG")}
    return subprocess.run(["java", *JVM_OPTS, *jvm, "-cp", f"{classes}{os.pathsep}{classpath}", "CtpipeTestConsumer",
                           str(props_file), topic, str(N), "60"], env={**base, **env}, capture_output=True,
                          text=True, timeout=180)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    return [line for line in proc.stderr.splitlines() if line.startswith("error ")][-1]


def _cfg(broker, **kw) -> KafkaSourceConfig:
    base = dict(bootstrap_servers=broker.sasl_ssl_bootstrap, topic="unused", security_protocol="SASL_SSL",
                sasl_mechanism=broker.sasl_mechanism, sasl_username_env=USER_ENV, ssl_cafile=broker.ca_file)
    return KafkaSourceConfig(**{**base, **kw})


def test_the_password_from_an_environment_variable_is_resolved_by_the_java_client(
        kafka_broker, filled_topic, java_consumer, tmp_path, monkeypatch):
    monkeypatch.setenv(USER_ENV, kafka_broker.user)
    monkeypatch.setenv(PASSWORD_ENV, kafka_broker.password)  # java_consumer_config checks it can be read
    props = java_consumer_config(_cfg(kafka_broker, sasl_password_env=PASSWORD_ENV))
    path = _properties(tmp_path / "consumer.properties", props)
    assert kafka_broker.password not in path.read_text() and f"${{env:{PASSWORD_ENV}}}" in path.read_text()
    done = _consume(java_consumer, path, filled_topic, {PASSWORD_ENV: kafka_broker.password})
    assert done.returncode == 0 and done.stdout.split() == ["ok", str(N)], done.stderr[-3000:]
    # The same properties with a wrong value in that variable: the broker refuses the login.
    refused = _consume(java_consumer, path, filled_topic, {PASSWORD_ENV: "not-the-password"})
    assert refused.returncode == 1, refused.stdout + refused.stderr[-3000:]
    assert "SaslAuthenticationException" in _error_line(refused)


def test_the_password_from_a_file_is_resolved_by_the_java_client(kafka_broker, filled_topic, java_consumer,
                                                                  tmp_path, monkeypatch):
    monkeypatch.setenv(USER_ENV, kafka_broker.user)
    props = java_consumer_config(_cfg(kafka_broker, sasl_password_file=kafka_broker.password_file))
    path = _properties(tmp_path / "consumer.properties", props)
    assert kafka_broker.password not in path.read_text() and "${dir:" in path.read_text()
    done = _consume(java_consumer, path, filled_topic, {})  # no password in the Java process's environment
    assert done.returncode == 0 and done.stdout.split() == ["ok", str(N)], done.stderr[-3000:]


def test_the_java_client_checks_the_brokers_host_name(kafka_broker, filled_topic, java_consumer, tmp_path,
                                                      monkeypatch):
    monkeypatch.setenv(USER_ENV, kafka_broker.user)
    port = kafka_broker.sasl_ssl_bootstrap.rsplit(":", 1)[1]
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 broker-alias.ctpipe.test\n")
    jvm = (f"-Djdk.net.hosts.file={hosts}",)
    props = java_consumer_config(_cfg(kafka_broker, bootstrap_servers=f"broker-alias.ctpipe.test:{port}",
                                      sasl_password_file=kafka_broker.password_file))
    assert "ssl.endpoint.identification.algorithm" not in props  # the Java default (https): checking on
    refused = _consume(java_consumer, _properties(tmp_path / "c.properties", props), filled_topic, {}, jvm)
    assert refused.returncode == 1, refused.stdout + refused.stderr[-3000:]
    assert "SslAuthenticationException" in _error_line(refused), refused.stderr[-3000:]
    # Switched off (never in production), the same connection gets through: the check is what refused it.
    props = java_consumer_config(_cfg(kafka_broker, bootstrap_servers=f"broker-alias.ctpipe.test:{port}",
                                      ssl_check_hostname=False, sasl_password_file=kafka_broker.password_file))
    done = _consume(java_consumer, _properties(tmp_path / "off.properties", props), filled_topic, {}, jvm)
    assert done.returncode == 0 and done.stdout.split() == ["ok", str(N)], done.stderr[-3000:]
