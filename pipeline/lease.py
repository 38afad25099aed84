"""Taking the storage root's lease for a command, and what SIGTERM does while it is held.

``backfill``, ``stream`` (per cycle), ``train`` (around its push and alias move) and ``windows
release`` are the writers of a storage root; each runs its writes inside :func:`root_lease`
(core/lock.py is the lease itself, docs/LEASE.md the operator's view).

SIGTERM (Kubernetes, Airflow and systemd stop with it) while the lease is held: the default
action would kill the process with the lease still held, so the next writer had to wait a TTL.
Instead, for the stream (``graceful``), the first SIGTERM marks the holding ``terminating``; the
stream calls :func:`stop_if_terminating` at its cycle's safe points (between phases) and abandons
the cycle with :class:`core.errors.TerminatedError`; a second SIGTERM raises at once. Other
commands raise TerminatedError at once (every write they make is crash-safe: MANIFEST last,
COMMITTED last). Either way the ``with`` block's exit releases the lease; a stream cycle abandoned
mid-way is replayed from its checkpointed plan.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator, Optional

from core.errors import TerminatedError
from core.lock import StorageLock, describe

DEFAULT_LOCK_TIMEOUT_S = 60.0
"""How long a command waits for the lease by default (twice the default TTL, so a holder that
died without releasing is taken over within it)."""

_terminating = threading.Event()


def stop_if_terminating(where: str) -> None:
    """Raise TerminatedError when SIGTERM arrived; ``where`` names the safe point."""
    if _terminating.is_set():
        raise TerminatedError(f"SIGTERM: stopped {where}; the lease was released and a rerun continues "
                              "from what the store holds")


@contextlib.contextmanager
def handle_sigterm(what: str, graceful: bool) -> Iterator[None]:
    """SIGTERM inside the block: with ``graceful`` the first one only sets the flag that
    :func:`stop_if_terminating` reads; without, or on the second, TerminatedError at once. Only in
    the main thread (signals arrive there); the previous handler comes back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(_signum, _frame):
        if _terminating.is_set() or not graceful:
            _terminating.set()
            raise TerminatedError(f"SIGTERM: {what} stopped at once; its lease was released")
        _terminating.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_unless_terminating(seconds: float) -> None:
    """Sleep ``seconds`` (a schedule, not a race workaround), waking at once on SIGTERM."""
    _terminating.wait(seconds)


def _tell_waiting(command: str, timeout_s: float):
    def tell(record: dict) -> None:
        print(f"ctpipe {command}: waiting up to {timeout_s:.0f} s for the storage root's lease, held by "
              f"{describe(record)}", file=sys.stderr, flush=True)
    return tell


@contextlib.contextmanager
def root_lease(root: str, command: str, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
               *, graceful: bool = False, lock: Optional[StorageLock] = None) -> Iterator[StorageLock]:
    """Hold the lease of ``root`` for ``command``, waiting up to ``timeout_s`` for it.

    SIGTERM while held (main thread only: signals arrive there): with ``graceful`` the first one
    only marks the holding terminating (the caller stops at its next safe point,
    :func:`stop_if_terminating`); without, or on the second, TerminatedError is raised at once.
    The lease is released either way."""
    lease = lock or StorageLock(root, command=command)
    lease.acquire(timeout_s=timeout_s, on_wait=_tell_waiting(command, timeout_s),
                  on_poll=lambda: stop_if_terminating(f"{command}, while waiting for the storage root's lease"))
    try:
        with handle_sigterm(command, graceful):
            yield lease
    finally:
        lease.release()


class Fences:
    """Several fences checked before each publish (the root's lease, the controller's leader lease)."""

    def __init__(self, *fences):
        self._fences = [f for f in fences if f is not None]

    def check_publish(self, what: str) -> None:
        for fence in self._fences:
            fence.check_publish(what)
