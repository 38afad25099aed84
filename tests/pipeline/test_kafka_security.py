"""``ctpipe stream`` against the real SASL_SSL listener of the test broker (no mocks).

The broker (tests/services.py, scripts/services.sh) listens with SASL_SSL and SCRAM-SHA-512; its
certificate names localhost and 127.0.0.1 and is signed by a throw-away CA. The SCRAM user's
password lives in a 0600 file; configs name an environment variable or that file, never the value.

- the password from an environment variable (the CLI) and from a file (in process) reads the topic;
- a wrong password and a wrong CA each fail with exit code 3 and one stderr line naming the setting
  to fix, and write nothing under the storage root (no window, part, dead letter, checkpoint, lease);
- hostname checking stays on: a host name the certificate does not hold fails the handshake;
- the broker's secrets stay out of its .env file, its configuration and its logs.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from pipeline.config import load_config
from tests._stream_check import sealed_ids, sensor_message, write_config
from transforms.kafka.client import client_kwargs
from transforms.kafka.produce import ensure_topic, produce
from transforms.kafka.source import KafkaSourceError, end_offsets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER_ENV = "CTPIPE_TEST_KAFKA_USER"
PASSWORD_ENV = "CTPIPE_TEST_KAFKA_PASSWORD"
N_EVENTS = 120


def sasl_config(tmp_path, broker, topic: str, **kafka) -> tuple[str, str]:
    """A ctpipe config reading ``topic`` over SASL_SSL; ``kafka`` overrides source.kafka keys
    (None removes one). Returns (config path, storage root)."""
    root = str(tmp_path / "store")
    path = write_config(str(tmp_path / "ctpipe.yaml"), root, broker.sasl_ssl_bootstrap, topic)
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    section = data["source"]["kafka"]
    section.update({"security_protocol": "SASL_SSL", "sasl_mechanism": broker.sasl_mechanism,
                    "sasl_username_env": USER_ENV, "sasl_password_env": PASSWORD_ENV, "ssl_cafile": broker.ca_file})
    for key, value in kafka.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh)
    return path, root


@pytest.fixture
def sasl_topic(kafka_broker, kafka_topic) -> list[str]:
    """``kafka_topic`` holding N_EVENTS events of the 00:00 hour and a watermark event at 03:00,
    produced over the SASL_SSL listener; returns the ids of the 00:00 events."""
    start = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)

    def event(ev_id, minutes):
        return sensor_message(ev_id, start, minutes)

    kw = kafka_broker.sasl_client_kwargs
    ensure_topic(kw, kafka_topic, 1)
    ids = [f"s-{i}" for i in range(N_EVENTS)]
    assert produce(kw, kafka_topic, [event(i, n // 2) for n, i in enumerate(ids)] + [event("wm", 180)]) == N_EVENTS + 1
    return ids


def run_cli(config_path: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "stream", "--cycles", "1", "--json",
                           "--config", config_path], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def files_written(root: str) -> list[str]:
    """Every file under the storage root (relative paths)."""
    return sorted(os.path.relpath(os.path.join(base, f), root) for base, _dirs, files in os.walk(root) for f in files)


def test_stream_over_sasl_ssl_with_the_password_from_an_environment_variable(kafka_broker, kafka_topic, sasl_topic,
                                                                            tmp_path):
    path, root = sasl_config(tmp_path, kafka_broker, kafka_topic)
    config_text = open(path, encoding="utf-8").read()
    assert kafka_broker.password not in config_text and PASSWORD_ENV in config_text

    proc = run_cli(path, **{USER_ENV: kafka_broker.user, PASSWORD_ENV: kafka_broker.password})
    assert proc.returncode == 0, proc.stderr[-3000:]
    cycle = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert cycle["records"] == N_EVENTS + 1
    assert [w["window_id"] for w in cycle["sealed"]] == ["20261127T0000Z"]
    ids, _records, _windows = sealed_ids(root)
    assert sorted(ids) == sorted(sasl_topic)
    assert kafka_broker.password not in proc.stdout + proc.stderr


def test_stream_over_sasl_ssl_with_the_password_from_a_file(kafka_broker, kafka_topic, sasl_topic, tmp_path,
                                                           monkeypatch):
    from pipeline import stream
    from pipeline.options import pipeline_options

    path, root = sasl_config(tmp_path, kafka_broker, kafka_topic, sasl_password_env=None,
                             sasl_password_file=kafka_broker.password_file)
    monkeypatch.setenv(USER_ENV, kafka_broker.user)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    results = stream.run_stream(load_config(path), pipeline_options("runner_configs/direct.yaml"), cycles=1)
    assert results[0].records == N_EVENTS + 1
    ids, _records, _windows = sealed_ids(root)
    assert sorted(ids) == sorted(sasl_topic)


def test_a_wrong_password_fails_with_one_line_naming_the_setting(kafka_broker, kafka_topic, sasl_topic, tmp_path):
    path, root = sasl_config(tmp_path, kafka_broker, kafka_topic)
    wrong = "not-the-password-" + kafka_topic
    proc = run_cli(path, **{USER_ENV: kafka_broker.user, PASSWORD_ENV: wrong})
    lines = stderr_lines(proc)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert len(lines) == 1, lines
    assert lines[0].startswith("ctpipe: error: Kafka at ")
    assert f"login of user '{kafka_broker.user}'" in lines[0]
    assert f"source.kafka.sasl_password_env (environment variable {PASSWORD_ENV})" in lines[0]
    assert wrong not in proc.stderr + proc.stdout and kafka_broker.password not in proc.stderr + proc.stdout
    assert files_written(root) == []  # no window, part, dead letter, checkpoint or lease file


def test_a_wrong_ca_fails_the_tls_handshake_with_one_line_naming_the_setting(kafka_broker, kafka_topic, sasl_topic,
                                                                          tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-keyout", str(tmp_path / "other-ca.key"), "-out", str(other_ca),
                    "-subj", "/CN=another throw-away CA"], check=True, capture_output=True, timeout=60)
    path, root = sasl_config(tmp_path, kafka_broker, kafka_topic, ssl_cafile=str(other_ca))
    proc = run_cli(path, **{USER_ENV: kafka_broker.user, PASSWORD_ENV: kafka_broker.password})
    lines = stderr_lines(proc)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ctpipe: error: TLS handshake with Kafka at {kafka_broker.sasl_ssl_bootstrap} failed: "
                               "certificate verify failed")
    assert f"source.kafka.ssl_cafile ({other_ca}) must hold the CA" in lines[0]
    assert files_written(root) == []  # no window, part, dead letter, checkpoint or lease file


def run_unbounded_cli(config_path: str, **env: str) -> subprocess.CompletedProcess:
    """``ctpipe stream --unbounded`` with the local streaming runner config pointed at a port where
    nothing listens: anything that got as far as submitting would fail differently."""
    nothing = {"CTPIPE_FLINK_MASTER": "127.0.0.1:9", "CTPIPE_BEAM_JOB_ENDPOINT": "127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "stream", "--unbounded", "--config", config_path,
                           "--runner-config", "runner_configs/flink-local-streaming.yaml"], cwd=REPO,
                          env={**os.environ, **nothing, **env}, capture_output=True, text=True, timeout=600)


def test_the_unbounded_command_checks_the_login_and_the_ca_before_it_submits(kafka_broker, kafka_topic, sasl_topic,
                                                                               tmp_path):
    """`ctpipe stream --unbounded` reports a wrong password or CA as `ctpipe stream` does (one line,
    exit 3, nothing written) before it builds or submits the job; with the right ones it gets as far
    as the root's missing schema (exit 4)."""
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-keyout", str(tmp_path / "other-ca.key"), "-out", str(other_ca),
                    "-subj", "/CN=another throw-away CA"], check=True, capture_output=True, timeout=60)
    creds = {USER_ENV: kafka_broker.user, PASSWORD_ENV: kafka_broker.password}
    path, root = sasl_config(tmp_path, kafka_broker, kafka_topic, expansion_service="127.0.0.1:9")
    wrong = run_unbounded_cli(path, **{**creds, PASSWORD_ENV: "not-the-password"})
    assert wrong.returncode == 3, wrong.stderr[-3000:]
    (line,) = stderr_lines(wrong)
    assert f"login of user '{kafka_broker.user}'" in line and "source.kafka.sasl_password_env" in line
    assert files_written(root) == []

    (tmp_path / "ca").mkdir()
    path_ca, root_ca = sasl_config(tmp_path / "ca", kafka_broker, kafka_topic, expansion_service="127.0.0.1:9",
                                   ssl_cafile=str(other_ca))
    bad_ca = run_unbounded_cli(path_ca, **creds)
    assert bad_ca.returncode == 3, bad_ca.stderr[-3000:]
    (line,) = stderr_lines(bad_ca)
    assert "certificate verify failed" in line and f"source.kafka.ssl_cafile ({other_ca})" in line
    assert files_written(root_ca) == []

    right = run_unbounded_cli(path, **creds)
    assert right.returncode == 4, right.stderr[-3000:]
    assert "has no schema yet" in right.stderr and kafka_broker.password not in right.stderr + right.stdout


def test_hostname_checking_stays_on(kafka_broker, kafka_topic, sasl_topic, tmp_path, monkeypatch):
    monkeypatch.setenv(USER_ENV, kafka_broker.user)
    monkeypatch.setenv(PASSWORD_ENV, kafka_broker.password)
    port = kafka_broker.sasl_ssl_bootstrap.rsplit(":", 1)[1]

    def kwargs(host, **kafka):
        path, _root = sasl_config(tmp_path, kafka_broker, kafka_topic, bootstrap_servers=f"{host}:{port}", **kafka)
        return client_kwargs(load_config(path).source.kafka)

    # Both names the certificate holds work, and checking is on without being asked for.
    assert kwargs("localhost")["ssl_check_hostname"] is True
    assert end_offsets(kwargs("localhost"), kafka_topic) == {0: N_EVENTS + 1}
    assert end_offsets(kwargs("127.0.0.1"), kafka_topic) == {0: N_EVENTS + 1}
    # 127.1 is 127.0.0.1 to the resolver, but not a name the certificate holds.
    with pytest.raises(KafkaSourceError, match=r"certificate is not valid for '127\.1'.*does not name the host"):
        end_offsets(kwargs("127.1"), kafka_topic, timeout_s=10)
    # Only switching the check off (never in production) lets that connection through.
    assert end_offsets(kwargs("127.1", ssl_check_hostname=False), kafka_topic) == {0: N_EVENTS + 1}


def test_the_broker_secrets_stay_out_of_its_env_file_configuration_and_logs(kafka_broker):
    password_file = kafka_broker.password_file
    assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
    state = os.path.dirname(password_file)
    keystore_password = open(os.path.join(state, "tls", "keystore-password"), encoding="utf-8").read().strip()
    assert stat.S_IMODE(os.stat(os.path.join(state, "server.properties")).st_mode) == 0o600
    env_file = open(os.path.join(os.path.dirname(state), "kafka.env"), encoding="utf-8").read()
    assert f"CTPIPE_KAFKA_PASSWORD_FILE={password_file}" in env_file
    for name in ("kafka.env", "kafka.log", os.path.join("kafka", "setup.log"),
                 os.path.join("kafka", "server.properties")):
        text = open(os.path.join(os.path.dirname(state), name), encoding="utf-8", errors="replace").read()
        assert kafka_broker.password not in text, name
        if name != os.path.join("kafka", "server.properties"):  # the broker reads its keystore password there
            assert keystore_password not in text, name
