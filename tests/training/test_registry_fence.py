"""Registry publishes under the storage root's lease (Registry.fenced_by): once the lease was
taken over, a push commits no version and alias moves and rollbacks are refused, on the file
and memory backends."""
from __future__ import annotations

import pytest

from core.errors import FencedError
from core.lease_stores import LocalLeaseStore
from core.lock import StorageLock
from tests.training.registry_behaviour import push
from training.registry.file import FileRegistry
from training.registry.memory import MemoryRegistry


@pytest.fixture
def saved_model_dir(tmp_path) -> str:
    """A directory the registry accepts (it stores bytes and checks for saved_model.pb; fencing is
    what is tested here, so no TensorFlow: tests/training/test_registry.py pushes real models)."""
    path = tmp_path / "model"
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"stand-in bytes")
    (path / "variables" / "variables.index").write_bytes(b"stand-in index")
    return str(path)


def _take_over(lock: StorageLock) -> None:
    """What a taker writes after seeing the lease unrenewed for its TTL (the holder's renewal
    thread has not noticed yet: only the stored token tells)."""
    store = LocalLeaseStore(lock.path)
    version, record = store.read()
    store.replace(version, dict(record, token=record["token"] + 1, holder="taker", write_id="taker"))


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_a_stale_holder_neither_commits_a_version_nor_moves_an_alias(kind, tmp_path, saved_model_dir):
    root = str(tmp_path / "store")
    reg = FileRegistry(str(tmp_path / "registry")) if kind == "file" else MemoryRegistry(f"memory://fence-{kind}")
    try:
        lock = StorageLock(root, heartbeat_s=10).acquire()
        reg.fenced_by(lock)
        v1 = push(reg, "m", saved_model_dir)
        v2 = push(reg, "m", saved_model_dir)
        reg.promote("m", v1.version)
        reg.promote("m", v2.version)
        _take_over(lock)
        with pytest.raises(FencedError, match="refusing to publish model 'm'"):
            push(reg, "m", saved_model_dir)
        assert [v.version for v in reg.list_versions("m")] == [1, 2]
        with pytest.raises(FencedError, match="refusing to publish alias 'production' of model 'm' -> v1"):
            reg.set_alias("m", "production", 1)
        with pytest.raises(FencedError, match="refusing to publish rollback of alias 'production'"):
            reg.rollback("m")
        assert reg.get_alias("m", "production") == 2
        lock.release()
    finally:
        if kind == "memory":
            reg.forget()
