"""Tests of training.registry: the shared Registry behaviour and the FileRegistry backend.

The behavioural tests (``test_behaviour_*``) take a ``backend`` fixture; here it runs them on a
local directory and on s3:// against a real moto server; tests/test_mlflow_registry.py imports
them and runs them again on a real MLflow server.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Callable

import pytest

from core.errors import ConfigError, IntegrityError, RegistryError
from training.registry import CHECKSUMS_FILE, COMMITTED_FILE, FileRegistry, ModelVersion, Registry, open_registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)
TAMPERED_FILE = "variables/variables.index"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               proc: subprocess.Popen | None = None, log: str | None = None) -> None:
    """Polls ``predicate`` until true; fails after ``timeout_s`` or when ``proc`` exits.

    ``proc``'s output must go to a file (``log``), never to an unread pipe that could fill up
    and block it.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out = open(log).read()[-4000:] if log else ""
            pytest.fail(f"{what}: process exited with {proc.returncode}: {out}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory) -> str:
    """A real, tiny SavedModel: f(x) = 3 * x."""
    import tensorflow as tf

    class Scale(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return x * self.w

    path = str(tmp_path_factory.mktemp("savedmodel") / "model")
    tf.saved_model.save(Scale(), path)
    return path


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A real moto S3 server on a free port, with bucket ``registry``."""
    import boto3

    port = free_port()
    log = str(tmp_path_factory.mktemp("moto") / "moto.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    try:
        wait_until(ready, 60, "moto_server readiness", proc, log)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
        s3.create_bucket(Bucket="registry")
        yield endpoint, s3
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclasses.dataclass
class Backend:
    """A registry under test plus a way to damage what it stored."""

    registry: Registry
    #: tamper(version, relpath, data): overwrite a stored file with ``data``, delete it
    #: when ``data`` is None.
    tamper: Callable[[ModelVersion, str, bytes | None], None]


def overwrite_or_delete(path: str, data: bytes | None) -> None:
    """Tamper with a stored file: replace its bytes, or delete it when ``data`` is None."""
    if data is None:
        os.unlink(path)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def file_backend(root: str) -> Backend:
    def tamper(mv: ModelVersion, rel: str, data: bytes | None) -> None:
        overwrite_or_delete(os.path.join(mv.uri, rel), data)

    return Backend(FileRegistry(root), tamper)


def s3_backend(endpoint: str, s3) -> Backend:
    from apache_beam.options.pipeline_options import PipelineOptions

    prefix = f"reg-{uuid.uuid4().hex[:8]}"
    options = PipelineOptions([f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=testing",
                               "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"])

    def tamper(mv: ModelVersion, rel: str, data: bytes | None) -> None:
        key = mv.uri[len("s3://registry/"):] + "/" + rel
        if data is None:
            s3.delete_object(Bucket="registry", Key=key)
        else:
            s3.put_object(Bucket="registry", Key=key, Body=data)

    return Backend(FileRegistry(f"s3://registry/{prefix}", pipeline_options=options), tamper)


@pytest.fixture(params=["file", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "file":
        return file_backend(str(tmp_path / "registry"))
    return s3_backend(*request.getfixturevalue("moto_endpoint"))


@pytest.fixture
def model() -> str:
    """A fresh model name (backends shared across tests see no leftovers)."""
    return f"m-{uuid.uuid4().hex[:10]}"


def push(reg: Registry, model: str, path: str, *, blessed: bool = True, auc: float = 0.9,
         ) -> ModelVersion:
    return reg.push(model, path, metrics={"auc": auc, "loss": {"train": 0.1}},
                    lineage={"windows": ["20261127T0100Z/v1"], "transform": "abc123"},
                    blessing={"blessed": blessed, "reason": "test"})


# --------------------------------------------------------------------------------------------
# Behaviour shared by every backend


def test_behaviour_push_list_get_fetch(backend, model, saved_model_dir, tmp_path):
    import tensorflow as tf

    reg = backend.registry
    assert reg.list_versions(model) == []
    v1 = push(reg, model, saved_model_dir, auc=0.91)
    v2 = push(reg, model, saved_model_dir, blessed=False, auc=0.5)
    assert (v1.version, v2.version) == (1, 2)
    assert [v.version for v in reg.list_versions(model)] == [1, 2]
    got = reg.get(model, 1)
    assert got == v1
    assert got.metrics == {"auc": 0.91, "loss": {"train": 0.1}}
    assert got.lineage["transform"] == "abc123"
    assert got.blessed and not reg.get(model, 2).blessed
    assert got.created_at.endswith("Z") and got.created_at[:4].isdigit()

    dest = reg.fetch(model, 1, str(tmp_path / "fetched"))
    assert dest == str(tmp_path / "fetched")
    for name in ("metrics.json", "lineage.json", "blessing.json", CHECKSUMS_FILE):
        assert os.path.isfile(os.path.join(dest, name)), name
    assert not os.path.exists(os.path.join(dest, COMMITTED_FILE))
    with open(os.path.join(dest, "metrics.json")) as f:
        assert json.load(f)["auc"] == 0.91
    with open(os.path.join(dest, CHECKSUMS_FILE)) as f:
        listed = set(json.load(f)["files"])
    assert "saved_model.pb" in listed and TAMPERED_FILE in listed
    loaded = tf.saved_model.load(dest)
    assert loaded(tf.constant([2.0])).numpy().tolist() == [6.0]
    with pytest.raises(RegistryError, match="not an empty directory"):
        reg.fetch(model, 1, dest)


def test_behaviour_unknown_version_names_known_ones(backend, model, saved_model_dir):
    push(backend.registry, model, saved_model_dir)
    with pytest.raises(RegistryError, match=r"no .*version 7.*\[1\]"):
        backend.registry.get(model, 7)


def test_behaviour_alias_moves_and_history(backend, model, saved_model_dir):
    reg = backend.registry
    push(reg, model, saved_model_dir)
    push(reg, model, saved_model_dir)
    assert reg.get_alias(model, "production") is None
    assert reg.aliases(model) == {}
    reg.set_alias(model, "candidate", 2, by="ci", reason="canary")
    reg.promote(model, 1)
    assert reg.aliases(model) == {"candidate": 2, "production": 1}
    assert reg.get(model, 2).aliases == ("candidate",)
    reg.promote(model, 2, by="alice", reason="better auc")
    assert reg.get(model, 2).aliases == ("candidate", "production")
    history = reg.alias_history(model, "production")
    assert [h["version"] for h in history] == [1, 2]
    assert history[-1]["by"] == "alice" and history[-1]["reason"] == "better auc"
    assert all(h["at"].endswith("Z") for h in history)
    with pytest.raises(RegistryError, match="version 9"):
        reg.set_alias(model, "production", 9)
    with pytest.raises(ConfigError, match="'latest'"):
        reg.set_alias(model, "latest", 1)
    assert reg.get_alias(model, "production") == 2


def test_behaviour_promote_refuses_unblessed(backend, model, saved_model_dir):
    reg = backend.registry
    push(reg, model, saved_model_dir, blessed=False)
    with pytest.raises(RegistryError, match="version 1 is not blessed.*force=True"):
        reg.promote(model, 1)
    assert reg.get_alias(model, "production") is None
    reg.promote(model, 1, force=True)
    assert reg.get_alias(model, "production") == 1
    assert reg.alias_history(model, "production")[-1]["reason"] == "promote (forced)"


def test_behaviour_rollback_to_previous_blessed(backend, model, saved_model_dir):
    reg = backend.registry
    push(reg, model, saved_model_dir)                 # 1 blessed
    push(reg, model, saved_model_dir, blessed=False)  # 2 not blessed
    push(reg, model, saved_model_dir)                 # 3 blessed
    reg.promote(model, 1)
    reg.promote(model, 2, force=True)
    reg.promote(model, 3)
    assert reg.rollback(model) == 1  # skips the unblessed 2
    assert reg.get_alias(model, "production") == 1
    assert [h["version"] for h in reg.alias_history(model, "production")] == [1]
    with pytest.raises(RegistryError, match=r"no earlier blessed version"):
        reg.rollback(model)
    assert reg.get_alias(model, "production") == 1


def test_behaviour_rollback_without_earlier_version_raises(backend, model, saved_model_dir):
    reg = backend.registry
    push(reg, model, saved_model_dir)
    with pytest.raises(RegistryError, match="'production'.*is not set"):
        reg.rollback(model)
    reg.promote(model, 1)
    with pytest.raises(RegistryError, match=r"points at version 1 .*history \[1\].*no earlier"):
        reg.rollback(model)
    assert reg.get_alias(model, "production") == 1


@pytest.mark.parametrize("damage", ["changed", "missing", "extra", "checksums"])
def test_behaviour_tampered_version_raises_integrity_error(backend, model, saved_model_dir,
                                                           tmp_path, damage):
    reg = backend.registry
    mv = push(reg, model, saved_model_dir)
    if damage == "changed":
        backend.tamper(mv, TAMPERED_FILE, b"not the index")
        expect = TAMPERED_FILE
    elif damage == "missing":
        backend.tamper(mv, TAMPERED_FILE, None)
        expect = TAMPERED_FILE
    elif damage == "extra":
        backend.tamper(mv, "assets/injected.txt", b"x")
        expect = "assets/injected.txt"
    else:  # a consistent forgery: file and CHECKSUMS.json rewritten together
        dest = reg.fetch(model, 1, str(tmp_path / "good"))
        with open(os.path.join(dest, CHECKSUMS_FILE)) as f:
            doc = json.load(f)
        doc["files"].pop(TAMPERED_FILE)
        backend.tamper(mv, TAMPERED_FILE, None)
        backend.tamper(mv, CHECKSUMS_FILE, json.dumps(doc).encode())
        expect = CHECKSUMS_FILE
    dest = tmp_path / "fetched"
    with pytest.raises(IntegrityError) as err:
        reg.fetch(model, 1, str(dest))
    assert expect in str(err.value)
    assert "tampered with or is corrupt" in str(err.value)
    assert "re-push" in str(err.value)
    assert not dest.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith("fetched")] == []


# --------------------------------------------------------------------------------------------
# FileRegistry specifics


def test_push_validates_inputs(tmp_path, saved_model_dir):
    reg = FileRegistry(str(tmp_path / "reg"))
    with pytest.raises(RegistryError, match="no saved_model.pb"):
        reg.push("m", str(tmp_path), metrics={}, lineage={}, blessing={"blessed": True})
    with pytest.raises(RegistryError, match="boolean 'blessed'"):
        reg.push("m", saved_model_dir, metrics={}, lineage={}, blessing={"ok": 1})
    with pytest.raises(RegistryError, match="metrics is not JSON-serializable"):
        reg.push("m", saved_model_dir, metrics={"x": object()}, lineage={},
                 blessing={"blessed": True})
    with pytest.raises(ConfigError, match="'bad/name'"):
        reg.push("bad/name", saved_model_dir, metrics={}, lineage={}, blessing={"blessed": True})
    bad = tmp_path / "with_reserved"
    shutil.copytree(saved_model_dir, bad)
    (bad / "CHECKSUMS.json").write_text("{}")
    with pytest.raises(RegistryError, match="CHECKSUMS.json"):
        reg.push("m", str(bad), metrics={}, lineage={}, blessing={"blessed": True})
    assert reg.list_versions("m") == []


def test_concurrent_local_pushes_get_distinct_versions(tmp_path, saved_model_dir):
    reg = FileRegistry(str(tmp_path / "reg"))
    results, errors = [], []

    def worker():
        try:
            results.append(push(reg, "m", saved_model_dir).version)
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4]
    assert [v.version for v in reg.list_versions("m")] == [1, 2, 3, 4]


CHILD = textwrap.dedent("""
    import signal, sys
    sys.path.insert(0, sys.argv[1])
    from training.registry import FileRegistry

    root, model_dir, ready, kill_at = sys.argv[2:6]

    def hook(event, path):
        if event == kill_at:
            open(ready, "w").close()
            signal.pause()  # until the test's SIGKILL

    FileRegistry(root, on_progress=hook).push(
        "m", model_dir, metrics={}, lineage={}, blessing={"blessed": True})
    sys.exit("push finished although the test meant to kill it")
""")


@pytest.mark.parametrize("kill_at", ["staged", "published"])
def test_push_killed_midway_leaves_nothing_visible(tmp_path, saved_model_dir, kill_at):
    root = str(tmp_path / "reg")
    reg = FileRegistry(root, lock_timeout_s=10)
    push(reg, "m", saved_model_dir)
    reg.promote("m", 1)
    ready = tmp_path / "child-ready"
    log = str(tmp_path / "child.log")
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, REPO, root, saved_model_dir, str(ready), kill_at],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(ready.exists, 120, "child push reaching " + kill_at, child, log)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    assert [v.version for v in reg.list_versions("m")] == [1]
    assert reg.aliases("m") == {"production": 1}
    staging = os.listdir(os.path.join(root, "m", ".staging"))
    if kill_at == "staged":
        assert len(staging) == 1  # the dead upload
    else:  # renamed into versions/2 but never committed; its lock is stale
        assert staging == []
        assert sorted(os.listdir(os.path.join(root, "m", "versions"))) == ["1", "2"]
        assert os.path.exists(os.path.join(root, "m", ".lock"))
        with pytest.raises(RegistryError, match="no committed version 2"):
            reg.get("m", 2)

    nxt = push(reg, "m", saved_model_dir)
    assert nxt.version == (2 if kill_at == "staged" else 3)
    assert [v.version for v in reg.list_versions("m")] == [1, nxt.version]
    reg.fetch("m", nxt.version, str(tmp_path / "fetched"))

    removed = reg.gc_incomplete("m", min_age_s=0)
    assert len(removed) == 1
    assert os.listdir(os.path.join(root, "m", ".staging")) == []
    assert sorted(os.listdir(os.path.join(root, "m", "versions"))) == sorted(
        ["1", str(nxt.version)])
    assert reg.gc_incomplete("m", min_age_s=0) == []


def test_gc_incomplete_keeps_young_staging(tmp_path, saved_model_dir):
    root = tmp_path / "reg"
    reg = FileRegistry(str(root))
    push(reg, "m", saved_model_dir)
    young = root / "m" / ".staging" / "20990101T000000000Z-live"
    young.mkdir(parents=True)
    (young / "saved_model.pb").write_bytes(b"uploading")
    assert reg.gc_incomplete("m", min_age_s=3600) == []
    assert young.exists()


def test_open_registry_picks_file_backend(tmp_path):
    reg = open_registry(f"file://{tmp_path}/reg")
    assert isinstance(reg, FileRegistry) and reg.uri == f"{tmp_path}/reg"
    with pytest.raises(ConfigError, match="names no MLflow tracking uri"):
        open_registry("mlflow:")
    with pytest.raises(ConfigError, match="'hdfz'"):
        open_registry("hdfz://x/y")
