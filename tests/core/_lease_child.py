"""Child processes of tests/core/test_lock.py: lease takers racing from a barrier, and a holder
that is paused (SIGSTOP) and then tries to publish.

``python -m tests.core._lease_child hold ROOT [S3 options...]`` takes the lease (TTL 2 s, renewed
every 0.2 s), prints ``acquired <token>``, then for each line ``publish`` on stdin tries to
publish the transform pointer under its fence and prints ``published`` or ``refused <message>``.
"""
from __future__ import annotations

import json
import sys
import time


def race(root: str, barrier, rounds: int, out_queue) -> None:
    """Take and release the lease ``rounds`` times; report (token, start_ns, end_ns) of each
    holding, measured on CLOCK_MONOTONIC (one clock for every process of this machine)."""
    from core.lock import StorageLock

    held = []
    barrier.wait()
    for _ in range(rounds):
        lock = StorageLock(root, heartbeat_s=2, stale_after_s=30)
        lock.acquire(timeout_s=120)
        start = time.monotonic_ns()
        lock.check_publish("a test holding")  # reads the stored record: it must name us
        end = time.monotonic_ns()
        lock.release()
        held.append((lock.token, start, end))
    out_queue.put(held)


def hold(root: str, flags: list[str]) -> None:
    from core import transform_store
    from core.errors import FencedError
    from core.lock import StorageLock

    if flags:
        from pipeline.options import pipeline_options

        pipeline_options("runner_configs/direct.yaml", flags)
    lock = StorageLock(root, heartbeat_s=0.2, stale_after_s=2, command="test-holder").acquire()
    print(f"acquired {lock.token}", flush=True)
    for line in sys.stdin:
        if line.strip() != "publish":
            continue
        try:
            transform_store.set_current(root, "from-the-paused-holder", fence=lock)
        except FencedError as exc:
            print("refused " + json.dumps(str(exc)), flush=True)
            continue
        print("published", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "hold":
        hold(sys.argv[2], sys.argv[3:])
