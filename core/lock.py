"""The storage-root lease: one writer per storage root, with a fencing token.

docs/LEASE.md explains the protocol for operators; this docstring is the argument that it holds.

**Record.** The lease is one record in a store that offers only create-if-absent and
replace-if-unchanged (core/lease_stores.py: a directory of linked files locally, conditional
PUTs on S3, generation preconditions on GCS). The record holds ``token`` (the fencing token),
``holder`` (a random id per acquisition), ``state`` (``held`` or ``released``), ``ttl_s``, and
for people: pid, host, command, wall-clock time of the write.

**Taking it.** A taker reads the record and writes its successor conditionally:
- no record: create it with token 1;
- ``released``: replace it with ``token + 1``;
- held by a process of this host that no longer exists: replace it with ``token + 1`` at once;
- held otherwise: the taker watches the record's *version*. The holder writes a new version at
  every renewal; once the taker has seen the same version for ``ttl_s`` on its own monotonic
  clock, the holder has not renewed for at least that long, and the taker replaces it with
  ``token + 1``. No two machines' wall clocks are ever compared.
Of two takers replacing the same version, the store lets exactly one win; the other re-reads and
sees a held lease. So there is at most one holder of each token, and tokens only grow.

**Holding it.** A background thread renews every ``heartbeat_s`` by replacing the version it last
wrote (same token). A conflict means somebody else wrote: the lease was taken over and this
process stops publishing. A transient error (network, throttling) is retried until the lease's
own validity runs out. The holder counts its lease valid until ``VALID_SHARE * ttl_s`` after the
start of its last successful write, on its own monotonic clock: a taker starts counting when it
first sees that write, which is later, and waits the whole ``ttl_s``, so the holder stops
believing before anyone else may start (the remaining quarter absorbs clock-rate drift and the
gap between a check and the write it guards).

**Fencing.** Every publish (a window's MANIFEST, a transform's COMPLETE and CURRENT, the
stream checkpoint, the schema, a window release, a registry version's commit marker, an alias
move) first calls ``check_publish``: the holder's own validity, then a read of the record, whose
token and holder must still be this process's. A stale holder (paused with SIGSTOP, cut off from
storage) is refused with :class:`core.errors.FencedError` (exit code 7). Beam workers get a
picklable :class:`Fence` and do the second half on their side. What no check can close: a
process paused *between* its check and the write right after it can still land that one write
once it resumes; on these stores no write can be made conditional on another object's content.
The validity margin makes that window at most one write wide.

``StorageLock(root)`` is the storage-root lease at ``<root>/locks/root.lease``; the local model
registry serializes its pushes with the same class at its own ``path``.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from core import layout
from core.errors import FencedError, LockError
from core.lease_stores import Conflict, open_store, read_record

#: Seconds between attempts while ``acquire(timeout_s=...)`` waits.
POLL_S = 0.05
#: Share of the TTL after the start of its last successful write during which a holder counts its lease valid.
VALID_SHARE = 0.75
#: Seconds between retries of a renewal that failed with a transient error.
RETRY_S = 0.5
#: Conditional-write conflicts in a row that one ``acquire`` attempt tolerates before it reads again.
_RACE_ATTEMPTS = 100


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe(record: dict) -> str:
    """``pid P on host H (command C, token T)`` for messages."""
    what = f"pid {record.get('pid')} on host {record.get('host')}"
    extras = [f"command {record['command']}"] if record.get("command") else []
    extras.append(f"token {record.get('token')}")
    return f"{what} ({', '.join(extras)})"


@dataclass(frozen=True)
class Fence:
    """What a Beam worker needs to check a lease before it publishes: picklable, no secrets."""

    path: str
    token: int
    holder: str

    def check_publish(self, what: str) -> None:
        """Raise FencedError unless the lease at ``path`` is still held with this token."""
        record = read_record(self.path)
        if record is None or record.get("token") != self.token or record.get("holder") != self.holder \
                or record.get("state") != "held":
            now = "nobody (released)" if record is None or record.get("state") != "held" else describe(record)
            raise FencedError(
                f"refusing to publish {what}: this process's lease on the storage root (token {self.token}, "
                f"{self.path}) is no longer held; it is now held by {now}. This process was paused or cut off "
                "from storage for longer than the lease TTL and another writer took over; nothing was published. "
                "Rerun the command: it continues from what the store holds")


class StorageLock:
    """The lease on ``root`` (``path``: a lease somewhere else; ``root`` then only names it in
    messages). Context manager, or ``acquire()`` / ``release()``.

    ``heartbeat_s``: seconds between renewals; ``stale_after_s``: the lease's TTL, how long a taker
    must see it unchanged before taking it over; ``clock``: a monotonic clock (a seam for tests).
    """

    def __init__(self, root: str, name: str = "root", heartbeat_s: float = 5.0, stale_after_s: float = 30.0,
                 clock=time.monotonic, *, path: Optional[str] = None, command: str = "",
                 store=None):
        if stale_after_s <= heartbeat_s * 2:
            raise ValueError(f"stale_after_s ({stale_after_s}) must exceed twice heartbeat_s ({heartbeat_s})")
        self.root = root
        self.path = path or layout.lease_path(root, name)
        self.heartbeat_s = heartbeat_s
        self.ttl_s = stale_after_s
        self.command = command
        self._clock = clock
        self._store = store or open_store(self.path)
        self.holder = uuid.uuid4().hex
        self.token: Optional[int] = None
        self._version = None
        self._seen = None  # (version, when first seen on our clock): kept across acquire() calls
        self._valid_until = 0.0
        self._held = False
        self._lost: Optional[str] = None
        self._io = threading.Lock()  # one conditional write at a time: heartbeat vs release
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -------------------------------------------------------------------- record

    def _record(self, token: int, state: str = "held") -> dict:
        return {"token": token, "holder": self.holder, "state": state, "ttl_s": self.ttl_s,
                "pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                "written_at": round(time.time(), 3), "write_id": uuid.uuid4().hex}

    def _free_now(self, record: dict) -> bool:
        if record.get("state") != "held":
            return True
        pid = record.get("pid")
        return record.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)

    # -------------------------------------------------------------------- public

    def acquire(self, timeout_s: float = 0.0, on_wait=None, on_poll=None) -> "StorageLock":
        """Take the lease, waiting up to ``timeout_s`` for its holder to release it or let it expire.
        ``on_wait(record)`` is called once, with the holder's record, when this call starts waiting;
        ``on_poll()`` before every wait between attempts (it may raise to give up, e.g. on SIGTERM).

        Raises:
          LockError: still held by another live process after ``timeout_s`` (at once when 0); the
            message names the holder.
        """
        if self._held:
            raise LockError(f"lease {self.path} is already held by this object")
        deadline = self._clock() + timeout_s
        conflicts = 0
        told = False
        while True:
            current = self._store.read()
            started = self._clock()
            try:
                if current is None:
                    token = 1
                    self._version = self._store.create(self._record(token))
                    break
                version, record = current
                if self._seen is None or self._seen[0] != version:
                    self._seen = (version, started)
                expired = started - self._seen[1] >= float(record.get("ttl_s", self.ttl_s))
                if self._free_now(record) or expired:
                    token = int(record["token"]) + 1
                    self._version = self._store.replace(version, self._record(token))
                    break
            except Conflict:
                conflicts += 1
                if conflicts < _RACE_ATTEMPTS:
                    continue  # somebody else wrote first: read what they wrote
            if self._clock() >= deadline:
                raise LockError(self._held_message(current, self._seen))
            if on_wait is not None and not told and current is not None:
                told = True
                on_wait(current[1])
            if on_poll is not None:
                on_poll()
            time.sleep(POLL_S)
        self.token = token
        self._valid_until = started + VALID_SHARE * self.ttl_s
        self._held = True
        self._lost = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat_loop, name="ctpipe-lease-renewal", daemon=True)
        self._thread.start()
        return self

    def fence(self) -> Fence:
        """The picklable fence of this holding, for Beam workers."""
        if self.token is None:
            raise LockError(f"lease {self.path} is not held")
        return Fence(self.path, self.token, self.holder)

    def check(self) -> None:
        """Raise if this process cannot count on the lease any more (taken over, or not renewed
        within its validity), without reading the store."""
        if self._lost:
            raise FencedError(self._lost)
        if not self._held:
            raise FencedError(f"lease {self.path} is not held by this process")
        late = self._clock() - self._valid_until
        if late > 0:
            raise FencedError(
                f"lease {self.path} (token {self.token}) was last renewed more than "
                f"{VALID_SHARE * self.ttl_s:.0f} s ago (this process was paused, or storage did not answer): "
                "another writer may have taken over, so nothing more is published. Rerun the command")

    def check_publish(self, what: str) -> None:
        """Before publishing ``what``: this process's own validity, then the stored token."""
        self.check()
        self.fence().check_publish(what)

    def release(self) -> None:
        """Stop renewing and mark the lease released (if it is still ours), so the next taker
        needs no wait."""
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.heartbeat_s + 5)
        self._held = False
        if self._lost:
            return
        with self._io:
            try:
                self._store.replace(self._version, self._record(self.token, state="released"))
            except Conflict:
                pass  # taken over meanwhile: not ours to release

    def owner(self) -> Optional[dict]:
        """The current lease record (token, holder, state, pid, host...), None when there is none."""
        current = self._store.read()
        return None if current is None else current[1]

    def __enter__(self) -> "StorageLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -------------------------------------------------------------------- messages

    def _held_message(self, current, seen) -> str:
        if current is None:
            return f"could not take the lease {self.path}: other processes keep taking it; try again"
        record = current[1]
        watched = self._clock() - seen[1] if seen else 0.0
        ttl = float(record.get("ttl_s", self.ttl_s))
        return (f"storage root {self.root} is in use: its lease {self.path} is held by {describe(record)}, "
                f"last written at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(record.get('written_at', 0)))} "
                f"by its clock. Wait for it to finish, or pass a longer --lock-timeout: a lease whose holder "
                f"stops renewing is taken over once this process has seen it unchanged for {ttl:.0f} s "
                f"(seen unchanged for {watched:.0f} s so far)")

    # -------------------------------------------------------------------- renewal

    def _renew_once(self) -> bool:
        """One renewal; True when written. Raises on transient errors; sets ``_lost`` on a takeover."""
        with self._io:
            if not self._held or self._lost:
                return False
            started = self._clock()
            record = self._record(self.token)
            try:
                self._version = self._store.replace(self._version, record)
            except Conflict:
                current = self._store.read()
                if current is not None and current[1].get("write_id") == record["write_id"]:
                    self._version = current[0]  # ours landed; only the reply was lost
                else:
                    now = "nobody" if current is None else describe(current[1])
                    self._lost = (f"lost the lease {self.path} (token {self.token}) to {now}: this process was "
                                  f"paused or cut off from storage longer than the lease TTL "
                                  f"({self.ttl_s:.0f} s); nothing more is published. Rerun the command")
                    return False
            self._valid_until = started + VALID_SHARE * self.ttl_s
            return True

    def _heartbeat_loop(self) -> None:
        wait = self.heartbeat_s
        while not self._stop.wait(wait):
            try:
                self._renew_once()
                wait = self.heartbeat_s
            except Exception as exc:  # transient: retry until the lease's own validity runs out
                if self._clock() >= self._valid_until:
                    self._lost = (f"cannot renew the lease {self.path} (token {self.token}): {exc}; it is no "
                                  "longer valid, so nothing more is published. Check the storage and rerun")
                    return
                wait = min(RETRY_S, self.heartbeat_s)
            if self._lost:
                return
