"""The Java Kafka consumer properties of the unbounded read (transforms.kafka.client.java_consumer_config):
security carried over, the SASL password only as a config-provider reference resolved where the
Java client connects, and a clear error for what the Java client would get wrong."""
from __future__ import annotations

import pytest

from core.errors import ConfigError
from pipeline.config import KafkaSourceConfig
from transforms.kafka.client import java_consumer_config

SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"


def _cfg(**kw):
    base = dict(bootstrap_servers="b:9093", topic="ev", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                sasl_username_env="K_USER")
    return KafkaSourceConfig(**{**base, **kw})


def test_password_from_an_env_var_is_an_env_provider_reference(monkeypatch):
    monkeypatch.setenv("K_USER", 'al"ice')
    monkeypatch.setenv("K_PASS", "s3cr3t-value")
    out = java_consumer_config(_cfg(sasl_password_env="K_PASS"))
    assert out["bootstrap.servers"] == "b:9093" and out["security.protocol"] == "SASL_SSL"
    assert out["sasl.mechanism"] == "SCRAM-SHA-512" and out["isolation.level"] == "read_committed"
    assert out["config.providers"] == "env"
    assert out["config.providers.env.class"] == "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    assert out["sasl.jaas.config"] == f'{SCRAM} required username="al\\"ice" password="${{env:K_PASS}}";'
    assert not any("s3cr3t-value" in v for v in out.values())
    assert "ssl.endpoint.identification.algorithm" not in out  # hostname checking stays on


def test_password_from_a_file_is_a_directory_provider_reference(monkeypatch, tmp_path):
    monkeypatch.setenv("K_USER", "alice")
    secret = tmp_path / "kafka" / "password"
    secret.parent.mkdir()
    secret.write_text("file-s3cr3t")
    out = java_consumer_config(_cfg(sasl_password_file=str(secret)))
    assert out["config.providers"] == "dir"
    assert out["config.providers.dir.class"] == "org.apache.kafka.common.config.provider.DirectoryConfigProvider"
    assert out["sasl.jaas.config"] == f'{SCRAM} required username="alice" password="${{dir:{secret.parent}:password}}";'
    assert not any("file-s3cr3t" in v for v in out.values())


def test_relative_ca_and_password_paths_reach_the_java_side_absolute(monkeypatch, tmp_path):
    """The job server and the TaskManagers open these files from working directories of their own."""
    monkeypatch.setenv("K_USER", "alice")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "password").write_text("s3cr3t")
    (tmp_path / "secrets" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.chdir(tmp_path)
    out = java_consumer_config(_cfg(sasl_password_file="secrets/password", ssl_cafile="secrets/ca.pem"))
    assert out["ssl.truststore.type"] == "PEM"
    assert out["ssl.truststore.location"] == str(tmp_path / "secrets" / "ca.pem")
    assert f"${{dir:{tmp_path / 'secrets'}:password}}" in out["sasl.jaas.config"]


def test_a_password_file_ending_in_a_newline_is_refused(monkeypatch, tmp_path):
    """Kafka's DirectoryConfigProvider hands over the file's bytes as they are: a trailing newline
    would become part of the password (kafka-python's reader strips it, the Java one does not)."""
    monkeypatch.setenv("K_USER", "alice")
    secret = tmp_path / "password"
    secret.write_text("s3cr3t\n")
    with pytest.raises(ConfigError, match="ends with a line break.*without a trailing newline"):
        java_consumer_config(_cfg(sasl_password_file=str(secret)))


def test_plaintext_has_no_providers_and_no_jaas():
    out = java_consumer_config(KafkaSourceConfig(bootstrap_servers="b:9092", topic="ev"))
    assert "sasl.jaas.config" not in out and "config.providers" not in out
    assert out["security.protocol"] == "PLAINTEXT"
    assert out["enable.auto.commit"] == "false"  # offsets are committed by KafkaIO when a checkpoint completes
