"""A lock on a storage root, so two ``ctpipe stream`` copies on the same root cannot both write.

Local roots: ``<root>/locks/<name>.lock`` created with O_CREAT|O_EXCL (atomic on POSIX), holding
the owner's pid, host, a random token and a heartbeat time that a background thread refreshes
every ``heartbeat_s``. A lock is stale, and is taken over, when its owner ran on this host and
its pid is gone (a kill -9 leaves the file behind), or when its heartbeat is older than
``stale_after_s`` (an owner on another host that died, or a hung one). Takeover renames the stale
file to a unique name first; rename is atomic, so of two processes taking over at once exactly
one succeeds and the other sees the new owner's file.

Object stores (s3://, gs://): a lease object at the same path with an expiry time, renewed by the
heartbeat. Caveat: Beam FileSystems offer no create-if-absent, so acquisition is
write-then-read-back: two processes that start within the same moment on the same root can both
believe they hold it until the next renewal shows one of them the other's token (that one then
stops with LockError before its next cycle). The lease narrows the window; it does not close it.
For a hard guarantee on object stores run one copy per root (a Kubernetes CronJob with
``concurrencyPolicy: Forbid``, or a Flink job).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Optional

from core import layout, storage
from core.errors import LockError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class StorageLock:
    """Exclusive lock named ``name`` on ``root``; use as a context manager or acquire()/release()."""

    def __init__(self, root: str, name: str, heartbeat_s: float = 10.0, stale_after_s: float = 120.0,
                 clock=time.time):
        if stale_after_s <= heartbeat_s:
            raise ValueError(f"stale_after_s ({stale_after_s}) must exceed heartbeat_s ({heartbeat_s})")
        self.root = root
        self.path = layout.lock_path(root, name)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._clock = clock
        self.token = uuid.uuid4().hex
        self._held = False
        self._lost: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -------------------------------------------------------------------- public

    def acquire(self) -> "StorageLock":
        if storage.is_local(self.path):
            self._acquire_local()
        else:
            self._acquire_lease()
        self._held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="ctpipe-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise LockError if the heartbeat found that another process took the lock over."""
        if self._lost:
            raise LockError(self._lost)

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
        self._held = False
        owner = self._read_owner()
        if owner is not None and owner.get("token") == self.token:
            storage.delete([self.path])

    def __enter__(self) -> "StorageLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -------------------------------------------------------------------- content

    def _content(self) -> bytes:
        now = self._clock()
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": self.token,
                           "heartbeat": now, "expires": now + self.stale_after_s}).encode()

    def _read_owner(self) -> Optional[dict]:
        if storage.is_local(self.path):
            try:
                with open(self.path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                return None
        else:
            if not storage.exists(self.path):
                return None
            data = storage.read_bytes(self.path)
        try:
            return json.loads(data)
        except ValueError:
            return {}  # torn or foreign content: treated as stale below (no heartbeat)

    def _is_stale(self, owner: dict) -> bool:
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            if not _pid_alive(owner["pid"]):
                return True
        heartbeat = owner.get("heartbeat")
        return not isinstance(heartbeat, (int, float)) or self._clock() - heartbeat > self.stale_after_s

    def _held_message(self, owner: dict) -> str:
        age = self._clock() - owner["heartbeat"] if isinstance(owner.get("heartbeat"), (int, float)) else None
        return (f"storage root {self.root} is locked by pid {owner.get('pid')} on host {owner.get('host')} "
                f"(lock {self.path}, heartbeat {age:.0f} s ago); another ctpipe stream is writing there. "
                f"Stop it first, or wait: a lock whose heartbeat is older than {self.stale_after_s:.0f} s "
                "is taken over" if age is not None else f"storage root {self.root} is locked ({self.path})")

    # -------------------------------------------------------------------- local

    def _acquire_local(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _attempt in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._read_owner()
                if owner is None:
                    continue  # released between our open and read: try again
                if not self._is_stale(owner):
                    raise LockError(self._held_message(owner)) from None
                stale = f"{self.path}.stale-{uuid.uuid4().hex}"
                try:
                    os.rename(self.path, stale)  # only one taker wins this rename
                except FileNotFoundError:
                    continue
                os.unlink(stale)
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(self._content())
            return
        raise LockError(f"could not take the lock {self.path}: other processes keep taking it; "
                        "is another ctpipe stream starting on the same storage root?")

    # -------------------------------------------------------------------- object store

    def _acquire_lease(self) -> None:
        owner = self._read_owner()
        if owner is not None and owner.get("token") != self.token and not self._lease_expired(owner):
            raise LockError(self._held_message(owner))
        storage.write_bytes_atomic(self.path, self._content())
        owner = self._read_owner()
        if owner is None or owner.get("token") != self.token:
            raise LockError(f"lease {self.path} was taken by another process while acquiring it "
                            f"(pid {owner and owner.get('pid')} on {owner and owner.get('host')})")

    def _lease_expired(self, owner: dict) -> bool:
        expires = owner.get("expires")
        return not isinstance(expires, (int, float)) or self._clock() > expires

    # -------------------------------------------------------------------- heartbeat

    def _renew(self) -> None:
        owner = self._read_owner()
        if owner is None or owner.get("token") != self.token:
            self._lost = (f"lost the lock {self.path} to pid {owner and owner.get('pid')} on host "
                          f"{owner and owner.get('host')} (was this process paused longer than "
                          f"{self.stale_after_s:.0f} s?); stopping before writing anything else")
            self._stop.set()
            return
        storage.write_bytes_atomic(self.path, self._content())

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._renew()
            except Exception as exc:  # a failed renewal must not kill the run silently: surface it
                self._lost = f"cannot renew the lock {self.path}: {exc}"
                self._stop.set()
