"""Every command on an s3:// storage root and registry, against the real local S3 server (moto)
and the real Apache Kafka broker, with the endpoint configured once (``object_store.s3``) and the
keys only in the environment; and an endpoint that does not answer fails fast with one line.

The whole-path test runs the commands in this process through ``pipeline.cli.main.main`` (one
TensorFlow import instead of one per command); what it asserts about the store is read back
with a separate boto3 client, not with ctpipe's own code.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest
import yaml

from tests._stream_check import sensor_message

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _keys(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _run(argv, capsys) -> tuple[int, str, str]:
    from pipeline.cli.main import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Credentials in the environment only; no AWS_ENDPOINT_URL, so only the config names the endpoint."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return s3_server


def test_every_command_works_on_an_s3_root_and_registry(s3_env, kafka_broker, kafka_topic, make_events, tmp_path,
                                                        capsys, monkeypatch):
    from kafka import KafkaProducer

    from transforms.kafka.produce import ensure_topic

    s3 = s3_env
    client = s3.client()
    bucket = s3.create_bucket()
    events_glob, _stats = make_events(hours=2, rows_per_hour=150)
    events_dir = os.path.dirname(events_glob)
    for name in sorted(os.listdir(events_dir)):
        client.upload_file(os.path.join(events_dir, name), bucket, f"events/{name}")

    ensure_topic(kafka_broker.client_kwargs, kafka_topic, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    import datetime as dt

    day = dt.datetime(2026, 11, 28, tzinfo=dt.timezone.utc)
    for minute in list(range(0, 60, 1)) + [200]:  # one window, then a marker that moves the watermark past it
        key, value = sensor_message(f"k-{minute:04d}", day, minute)
        producer.send(kafka_topic, key=key, value=value)
    for minute in range(10):  # 10 of 70 records unusable: above max_bad_fraction, so the window is QUARANTINED
        key, value = sensor_message(f"bad-{minute:04d}", day, minute)
        producer.send(kafka_topic, key=key, value=json.dumps(dict(json.loads(value), temperature="hot")).encode())
    producer.flush(timeout=60)
    producer.close()

    config_path = tmp_path / "ctpipe.yaml"
    config_path.write_text(yaml.safe_dump({
        "storage": {"root": f"s3://{bucket}/store"},
        "source": {"files": {"uri": f"s3://{bucket}/events/*.jsonl"},
                   "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic,
                             "group_id": f"g-{kafka_topic}"}},
        "registry": {"uri": f"s3://{bucket}/registry", "model_name": "sensors"},
        "object_store": {"s3": {"endpoint_url": s3.endpoint_url, "region": s3.region},
                         "connect_timeout": "2s", "read_timeout": "20s"},
        "validation": {"max_bad_fraction": 0.1, "min_count_ratio": None, "max_count_ratio": None},
        "training": {"epochs": 1, "batch_size": 64, "backup_dir": str(tmp_path / "backup")},
        "gate": {"thresholds": [{"metric": "example_count", "lower_bound": 1}]},
    }))
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory either
    cfg = ["--config", str(config_path)]
    outputs = []

    def ok(*argv):
        code, out, err = _run([*argv, *cfg], capsys)
        outputs.append(out + err)
        assert code == 0, f"ctpipe {' '.join(argv)} exited {code}: {err[-2000:]}"
        return out

    backfill = json.loads(ok("backfill", "--json"))
    assert [w["window_id"] for w in backfill["windows"]] == ["20261127T0000Z", "20261127T0100Z"]
    ok("stream", "--until-idle")
    listed = json.loads(ok("windows", "list", "--json"))
    assert {r["window_id"] for r in listed} >= {"20261127T0000Z", "20261127T0100Z", "20261128T0000Z"}
    shown = json.loads(ok("windows", "show", "20261128T0000Z", "--json"))
    assert (shown["record_count"], shown["dead_letters"], shown["validation"]["verdict"]) == (60, 10, "QUARANTINED")
    ok("windows", "release", "20261128T0000Z", "--reason", "the 10 bad records were a test device", "--by", "qa")
    assert "# schema v1" in ok("schema", "show")

    first = json.loads(ok("train", "--json"))
    assert first["pushed"] and first["version"] == 1 and first["train_examples"] > 0
    assert [w["window_id"] for w in first["windows"]] == ["20261127T0000Z", "20261127T0100Z", "20261128T0000Z"]
    again = json.loads(ok("train", "--json"))  # the same inputs again: a no-op, the version is reused
    assert again["reused"] and again["version"] == 1
    settings = yaml.safe_load(config_path.read_text())
    settings["training"]["epochs"] = 2  # another training input: a new run
    config_path.write_text(yaml.safe_dump(settings))
    second = json.loads(ok("train", "--json"))  # fetches production v1 from the store to gate and warm-start
    assert second["version"] == 2 and second["baseline_version"] == 1
    versions = json.loads(ok("registry", "list", "--json"))["versions"]
    assert [(v["version"], v["aliases"]) for v in versions] == [(1, []), (2, ["production"])]
    rolled = json.loads(ok("registry", "rollback", "--json"))
    assert (rolled["from"], rolled["to"]) == (2, 1)
    ok("registry", "promote", "2", "--reason", "back again")
    fetched = json.loads(ok("registry", "fetch", "--out", str(tmp_path / "served"), "--json"))
    assert fetched["version"] == 2 and os.path.exists(tmp_path / "served" / "saved_model.pb")
    ok("report", "--out", str(tmp_path / "report.html"))
    assert "20261128T0000Z" in (tmp_path / "report.html").read_text()

    # Read back with a client of our own: the windows, the checkpoint, the models and the alias are
    # all in the bucket, and no ctpipe state was written to the local disk instead.
    keys = _keys(client, bucket, "")
    assert {"store/windows/20261127T0000Z/v1/MANIFEST.json", "store/windows/20261128T0000Z/v1/MANIFEST.json",
            "store/windows/20261128T0000Z/v1/RELEASE.json",
            "registry/sensors/versions/1/COMMITTED.json", "registry/sensors/versions/2/COMMITTED.json",
            "registry/sensors/versions/2/saved_model.pb"} <= set(keys)
    assert any(k.startswith("store/checkpoints/") for k in keys), keys
    alias = json.loads(client.get_object(Bucket=bucket, Key="registry/sensors/aliases/production.json")["Body"].read())
    assert alias["version"] == 2
    assert sorted(os.listdir(tmp_path)) == sorted(["backup", "ctpipe.yaml", "events", "report.html", "served"])
    assert not any(s3.secret_key in text for text in outputs)


class _Silent:
    """A TCP server that accepts connections and never answers (a hung endpoint)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("endpoint", ["refused", "silent"])
def test_an_endpoint_that_does_not_answer_fails_fast_with_one_line(endpoint, tmp_path):
    silent = _Silent() if endpoint == "silent" else None
    port = silent.port if silent else _closed_port()
    config = tmp_path / "ctpipe.yaml"
    config.write_text(yaml.safe_dump({
        "storage": {"root": "s3://ctpipe-unreachable/store"},
        "registry": {"uri": "s3://ctpipe-unreachable/registry"},
        "object_store": {"s3": {"endpoint_url": f"http://127.0.0.1:{port}", "region": "us-east-1"},
                         "connect_timeout": "1s", "read_timeout": "1s", "max_attempts": 2}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="never-printed")
    try:
        for argv in (["windows", "list"], ["registry", "list"], ["train"]):
            # the timeout only bounds a regression (Beam's own retries take minutes): it asserts nothing
            proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv, "--config", str(config)], cwd=REPO,
                                  env=env, capture_output=True, text=True, timeout=120)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 8, (argv, proc.stderr[-2000:])
            assert len(lines) == 1 and lines[0].startswith("ctpipe: error: cannot reach the S3 endpoint "
                                                           f"http://127.0.0.1:{port}"), proc.stderr
            assert "object_store.s3.endpoint_url" in lines[0] and "never-printed" not in proc.stderr + proc.stdout
    finally:
        if silent:
            silent.close()
