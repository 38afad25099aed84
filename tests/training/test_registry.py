"""Tests of training.registry: the shared behaviour on the file, in-memory and S3 backends, and
what is specific to FileRegistry, MemoryRegistry, open_registry and the model lock.

The shared behaviour lives in tests/training/registry_behaviour.py; here ``backend`` binds it to a local
directory, to an in-memory store, and to s3:// on a real moto server (the ``s3_server`` fixture of
tests/services.py). tests/training/test_mlflow_registry.py runs it on a real MLflow server.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Callable

import pytest

from core.errors import ConfigError, RegistryError
from core.lock import StorageLock
from tests.training.registry_behaviour import (
    BEHAVIOURS,
    Backend,
    fresh_model_name,
    overwrite_or_delete,
    push,
    run_behaviour,
    save_tiny_model,
)
from training.registry import ModelVersion, open_registry
from training.registry.file import FileRegistry
from training.registry.memory import MemoryRegistry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
# Fixtures and the backends of the shared behaviour


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory) -> str:
    return save_tiny_model(str(tmp_path_factory.mktemp("savedmodel") / "model"))


@pytest.fixture
def model() -> str:
    return fresh_model_name()


def file_backend(root: str) -> Backend:
    def tamper(mv: ModelVersion, rel: str, data: bytes | None) -> None:
        overwrite_or_delete(os.path.join(mv.uri, rel), data)

    return Backend(FileRegistry(root), tamper, lambda: FileRegistry(root))


def memory_backend() -> Backend:
    uri = f"memory://tests-{uuid.uuid4().hex[:8]}"
    reg = MemoryRegistry(uri)

    def tamper(mv: ModelVersion, rel: str, data: bytes | None) -> None:
        files = reg.stored_files(mv.model, mv.version)
        if data is None:
            del files[rel]
        else:
            files[rel] = data

    return Backend(reg, tamper, lambda: open_registry(uri))


def s3_backend(s3_server) -> Backend:
    from apache_beam.options.pipeline_options import PipelineOptions

    bucket = s3_server.create_bucket()
    uri = f"s3://{bucket}/reg-{uuid.uuid4().hex[:8]}"
    options = PipelineOptions([f"--s3_endpoint_url={s3_server.endpoint_url}",
                               f"--s3_access_key_id={s3_server.access_key}",
                               f"--s3_secret_access_key={s3_server.secret_key}",
                               f"--s3_region_name={s3_server.region}"])
    client = s3_server.client()

    def tamper(mv: ModelVersion, rel: str, data: bytes | None) -> None:
        key = mv.uri[len(f"s3://{bucket}/"):] + "/" + rel
        if data is None:
            client.delete_object(Bucket=bucket, Key=key)
        else:
            client.put_object(Bucket=bucket, Key=key, Body=data)

    return Backend(FileRegistry(uri, pipeline_options=options), tamper,
                   lambda: FileRegistry(uri, pipeline_options=options))


@pytest.fixture(params=["file", "memory", "s3"])
def backend(request, tmp_path) -> Backend:
    if request.param == "file":
        return file_backend(str(tmp_path / "registry"))
    if request.param == "memory":
        made = memory_backend()
        request.addfinalizer(made.registry.forget)
        return made
    return s3_backend(request.getfixturevalue("s3_server"))


@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_behaviour(behaviour, backend, model, saved_model_dir, tmp_path):
    run_behaviour(behaviour, backend, model, saved_model_dir, tmp_path)


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
    from training.registry.file import FileRegistry

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


def test_open_registry_picks_the_backend_by_uri(tmp_path):
    import training.registry

    reg = open_registry(f"file://{tmp_path}/reg")
    assert isinstance(reg, FileRegistry) and reg.uri == f"{tmp_path}/reg"
    assert isinstance(open_registry(str(tmp_path / "plain")), FileRegistry)
    memory = open_registry("memory://dispatch")
    assert isinstance(memory, MemoryRegistry) and memory.uri == "memory://dispatch"
    memory.forget()
    assert training.registry.FileRegistry is FileRegistry
    assert training.registry.MemoryRegistry is MemoryRegistry
    with pytest.raises(ConfigError, match="'memory://'.*memory://<name>"):
        open_registry("memory://")
    with pytest.raises(ConfigError, match="names no MLflow tracking uri"):
        open_registry("mlflow:")
    with pytest.raises(ConfigError, match="'hdfz'"):
        open_registry("hdfz://x/y")


def test_local_push_waits_for_the_model_lock_and_then_releases_it(tmp_path, saved_model_dir):
    root = str(tmp_path / "reg")
    lock_path = os.path.join(root, "m", ".lock")
    held = StorageLock(root, "model", path=lock_path).acquire()
    release = threading.Timer(0.5, held.release)
    release.start()
    try:
        started = time.monotonic()
        mv = push(FileRegistry(root, lock_timeout_s=30), "m", saved_model_dir)
        waited = time.monotonic() - started
    finally:
        release.cancel()
        held.release()
    assert mv.version == 1
    assert waited >= 0.4  # it did wait for the holder
    assert StorageLock(root, "model", path=lock_path).owner()["state"] == "released"


def test_local_push_gives_up_on_a_held_model_lock_naming_it(tmp_path, saved_model_dir):
    root = str(tmp_path / "reg")
    lock_path = os.path.join(root, "m", ".lock")
    reg = FileRegistry(root, lock_timeout_s=1)
    with StorageLock(root, "model", path=lock_path):
        with pytest.raises(RegistryError) as err:
            push(reg, "m", saved_model_dir)
        with pytest.raises(RegistryError, match="still held after 1 s"):
            reg.gc_incomplete("m")
    message = str(err.value)
    assert f"lock {lock_path!r} is still held after 1 s" in message
    assert f"'pid': {os.getpid()}" in message and "wait for that push to finish" in message
    assert reg.list_versions("m") == []  # the staged upload was never published
    assert push(reg, "m", saved_model_dir).version == 1


def test_memory_registries_of_one_name_share_a_store_until_forgotten(saved_model_dir):
    name = f"memory://shared-{uuid.uuid4().hex[:8]}"
    first = MemoryRegistry(name)
    push(first, "m", saved_model_dir)
    assert [v.version for v in MemoryRegistry(name).list_versions("m")] == [1]
    assert MemoryRegistry(f"{name}-other").list_versions("m") == []
    assert first.get("m", 1).uri == f"{name}/m/versions/1"
    first.forget()
    assert MemoryRegistry(name).list_versions("m") == []
    with pytest.raises(ConfigError, match="'memory://a/b'"):
        MemoryRegistry("memory://a/b")


def test_fetch_refuses_a_listed_name_that_escapes_the_destination(tmp_path, saved_model_dir):
    """A crafted registry listing ("../x") must not write outside the fetch destination."""
    from core.errors import StorageError

    reg = MemoryRegistry(f"memory://escape-{uuid.uuid4().hex[:8]}")
    v = push(reg, "m", saved_model_dir)
    reg.stored_files("m", v.version)["../../escaped.pb"] = b"payload"
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(StorageError, match="escapes"):
        reg.fetch("m", v.version, str(dest))
    assert not any(p.name == "escaped.pb" for p in tmp_path.rglob("*"))
