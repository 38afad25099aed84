"""core.lock.StorageLock: waiting with a timeout, a lock file at a chosen path, and a lock file
whose content does not parse (being written, or foreign). tests/pipeline/test_stream.py covers the rest:
refusal, takeover of dead and stale owners, the heartbeat and object-store leases."""
from __future__ import annotations

import os
import threading
import time

import pytest

from core.errors import LockError
from core.lock import StorageLock


def test_acquire_with_a_timeout_waits_for_the_owner_to_release(tmp_path):
    first = StorageLock(str(tmp_path), "s").acquire()
    release = threading.Timer(0.4, first.release)
    release.start()
    try:
        started = time.monotonic()
        second = StorageLock(str(tmp_path), "s").acquire(timeout_s=30)
        waited = time.monotonic() - started
    finally:
        release.cancel()
        first.release()
    try:
        assert waited >= 0.3
        assert second.owner()["token"] == second.token
    finally:
        second.release()
    assert second.owner() is None


def test_acquire_with_a_timeout_gives_up_on_a_live_owner(tmp_path):
    with StorageLock(str(tmp_path), "s"):
        started = time.monotonic()
        with pytest.raises(LockError, match=f"locked by pid {os.getpid()}"):
            StorageLock(str(tmp_path), "s").acquire(timeout_s=0.3)
        assert 0.3 <= time.monotonic() - started < 10


def test_a_lock_file_can_live_at_a_chosen_path(tmp_path):
    path = str(tmp_path / "model" / ".lock")
    with StorageLock(str(tmp_path / "model"), "model", path=path) as lock:
        assert lock.path == path and os.path.isfile(path)
        assert not os.path.exists(tmp_path / "locks")
        with pytest.raises(LockError, match="locked by pid"):
            StorageLock(str(tmp_path / "model"), "model", path=path).acquire()
    assert not os.path.exists(path)


def test_an_unparseable_lock_file_is_held_until_the_file_is_stale(tmp_path):
    lock = StorageLock(str(tmp_path), "s", heartbeat_s=1, stale_after_s=60)
    os.makedirs(os.path.dirname(lock.path))
    with open(lock.path, "w"):  # created, not yet written: what a racing acquirer can see
        pass
    with pytest.raises(LockError, match="holds no lock owner.*taken over once 60 s old"):
        lock.acquire()
    old = time.time() - 61
    os.utime(lock.path, (old, old))
    lock.acquire()
    try:
        assert lock.owner()["token"] == lock.token
    finally:
        lock.release()
