"""A lock on a storage root, so two ``ctpipe stream`` copies on the same root cannot both write.

Local roots: ``<root>/locks/<name>.lock`` created with O_CREAT|O_EXCL (atomic on POSIX), holding
the owner's pid, host, a random token and a heartbeat time that a background thread refreshes
every ``heartbeat_s``. A lock is stale, and is taken over, when its owner ran on this host and
its pid is gone (a kill -9 leaves the file behind), or when its heartbeat is older than
``stale_after_s`` (an owner on another host that died, or a hung one). Takeover renames the stale
file to a unique name first; rename is atomic, so of two processes taking over at once exactly
one succeeds and the other sees the new owner's file. A lock file whose content does not parse (its
creator has made it and not yet written it, or something else wrote it) counts as held until the
file itself is ``stale_after_s`` old.

``acquire(timeout_s=...)`` waits, polling, for a live owner to release the lock; without a
timeout it refuses at once. The storage-root lock lives at ``<root>/locks/<name>.lock``; other
users of the same lock (the model registry's per-model ``<registry>/<model>/.lock``) pass their
own ``path``.

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

_RACED = object()  # what _try_local returns when the lock changed hands during the attempt


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


#: Seconds between attempts while ``acquire(timeout_s=...)`` waits for the owner to release.
POLL_S = 0.05
#: Attempts in a row that may find the lock released or taken over by someone else before
#: acquiring without a timeout gives up.
_RACE_ATTEMPTS = 3


class StorageLock:
    """Exclusive lock named ``name`` on ``root``; use as a context manager or acquire()/release().

    ``path`` places the lock file somewhere other than ``layout.lock_path(root, name)``; ``root``
    then only names what the lock protects in messages.
    """

    def __init__(self, root: str, name: str, heartbeat_s: float = 10.0, stale_after_s: float = 120.0,
                 clock=time.time, *, path: Optional[str] = None):
        if stale_after_s <= heartbeat_s:
            raise ValueError(f"stale_after_s ({stale_after_s}) must exceed heartbeat_s ({heartbeat_s})")
        self.root = root
        self.path = path or layout.lock_path(root, name)
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = stale_after_s
        self._clock = clock
        self.token = uuid.uuid4().hex
        self._held = False
        self._lost: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -------------------------------------------------------------------- public

    def acquire(self, timeout_s: float = 0.0) -> "StorageLock":
        """Take the lock, waiting up to ``timeout_s`` for a live owner to release it.

        Raises:
          LockError: another live process still holds it after ``timeout_s`` (at once when 0).
        """
        deadline = time.monotonic() + timeout_s
        races = 0
        while True:
            owner = self._try_local() if storage.is_local(self.path) else self._try_lease()
            if owner is None:
                break
            waiting = time.monotonic() < deadline
            if owner is _RACED:
                races += 1
                if races < _RACE_ATTEMPTS:
                    continue
                if not waiting:
                    raise LockError(f"could not take the lock {self.path}: other processes keep taking it; "
                                    "is another ctpipe stream starting on the same storage root?")
            elif not waiting:
                raise LockError(self._held_message(owner))
            time.sleep(POLL_S)
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

    def owner(self) -> Optional[dict]:
        """The lock file's current content (pid, host, token, heartbeat...), None when unlocked."""
        return self._read_owner()

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
            owner = json.loads(data)
        except ValueError:
            owner = None
        if isinstance(owner, dict):
            return owner
        if storage.is_local(self.path):
            # Being written by the process that just created it, or foreign: held until the
            # file itself is stale (a missing file here was released: unlocked).
            try:
                return {"heartbeat": os.path.getmtime(self.path)}
            except FileNotFoundError:
                return None
        return {}  # object stores write atomically, so this is foreign content: stale (no heartbeat)

    def _is_stale(self, owner: dict) -> bool:
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            if not _pid_alive(owner["pid"]):
                return True
        heartbeat = owner.get("heartbeat")
        return not isinstance(heartbeat, (int, float)) or self._clock() - heartbeat > self.stale_after_s

    def _held_message(self, owner: dict) -> str:
        age = self._clock() - owner["heartbeat"] if isinstance(owner.get("heartbeat"), (int, float)) else None
        if age is not None and "token" not in owner:  # unparseable content, aged by its mtime
            return (f"storage root {self.root} is locked: {self.path} holds no lock owner (a process is "
                    f"taking the lock, or something else wrote the file {age:.0f} s ago); wait, or remove "
                    f"the file if no ctpipe process uses this root: it is taken over once "
                    f"{self.stale_after_s:.0f} s old")
        return (f"storage root {self.root} is locked by pid {owner.get('pid')} on host {owner.get('host')} "
                f"(lock {self.path}, heartbeat {age:.0f} s ago); another ctpipe stream is writing there. "
                f"Stop it first, or wait: a lock whose heartbeat is older than {self.stale_after_s:.0f} s "
                "is taken over" if age is not None else f"storage root {self.root} is locked ({self.path})")

    # -------------------------------------------------------------------- local

    def _try_local(self):
        """One attempt: None when taken, the live owner's document when held, _RACED when the
        file changed hands under us (released, or a stale one removed): try again."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = self._read_owner()
            if owner is None:
                return _RACED  # released between our open and read
            if not self._is_stale(owner):
                return owner
            stale = f"{self.path}.stale-{uuid.uuid4().hex}"
            try:
                os.rename(self.path, stale)  # only one taker wins this rename
            except FileNotFoundError:
                return _RACED
            os.unlink(stale)
            return _RACED
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._content())
        return None

    # -------------------------------------------------------------------- object store

    def _try_lease(self) -> Optional[dict]:
        """One attempt: None when taken, the live owner's document when held."""
        owner = self._read_owner()
        if owner is not None and owner.get("token") != self.token and not self._lease_expired(owner):
            return owner
        storage.write_bytes_atomic(self.path, self._content())
        owner = self._read_owner()
        if owner is None or owner.get("token") != self.token:
            raise LockError(f"lease {self.path} was taken by another process while acquiring it "
                            f"(pid {owner and owner.get('pid')} on {owner and owner.get('host')})")
        return None

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
