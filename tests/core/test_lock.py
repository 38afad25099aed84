"""core.lock (the storage-root lease) and core.lease_stores: conditional writes, expiry on the
observer's clock, fencing, renewal. Processes race from a barrier; a holder paused with SIGSTOP
is refused once it resumes, locally and on S3 (the moto server); GCS runs against a fake of the
google-cloud-storage calls the store makes."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from core import layout, transform_store
from core.errors import FencedError, LockError, StorageError
from core.lease_stores import Conflict, GcsLeaseStore, LocalLeaseStore, S3LeaseStore
from core.lock import Fence, StorageLock

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _record(token: int, holder: str = "other", **extra) -> dict:
    return {"token": token, "holder": holder, "state": "held", "ttl_s": 30, "pid": 1, "host": "elsewhere",
            "written_at": 0, "write_id": os.urandom(8).hex(), **extra}


# --------------------------------------------------------------------------- local store


def test_local_store_create_and_replace_never_overwrite(tmp_path):
    store = LocalLeaseStore(str(tmp_path / "lease"))
    assert store.read() is None
    v1 = store.create(_record(1, "a"))
    with pytest.raises(Conflict):
        store.create(_record(1, "b"))
    v2 = store.replace(v1, _record(2, "b"))
    with pytest.raises(Conflict):  # a taker that read v1 too late: b's record stays
        store.replace(v1, _record(2, "c"))
    assert store.read() == (v2, store.read()[1]) and store.read()[1]["holder"] == "b"


def test_local_store_refuses_a_successor_written_below_the_newest(tmp_path):
    """A writer so slow that its successor name was already cleaned up must lose, not resurrect
    an old sequence number."""
    store = LocalLeaseStore(str(tmp_path / "lease"))
    version = store.create(_record(1))
    for token in range(2, 20):
        version = store.replace(version, _record(token))
    assert not os.path.exists(store._file(2))  # cleaned up (only the newest KEEP stay)
    with pytest.raises(Conflict):
        store.replace(1, _record(99, "slow"))
    assert not os.path.exists(store._file(2)) and store.read()[1]["token"] == 19


def test_local_store_names_a_legacy_lock_file(tmp_path):
    path = tmp_path / "root.lease"
    path.write_text("{}")
    with pytest.raises(StorageError, match="is a file, not a lease directory"):
        LocalLeaseStore(str(path)).read()


def test_local_store_ignores_temporary_files_being_written(tmp_path):
    store = LocalLeaseStore(str(tmp_path / "lease"))
    store.create(_record(1))
    (tmp_path / "lease" / ".tmp-partial").write_bytes(b'{"tok')
    assert store.read()[1]["token"] == 1


# --------------------------------------------------------------------------- acquiring


def test_a_live_lease_is_refused_with_its_holder_named_and_released_ones_are_taken_at_once(tmp_path):
    first = StorageLock(str(tmp_path), command="backfill").acquire()
    try:
        with pytest.raises(LockError, match=rf"held by pid {os.getpid()} on host .*command backfill, token 1"):
            StorageLock(str(tmp_path)).acquire()
    finally:
        first.release()
    assert first.owner()["state"] == "released"
    second = StorageLock(str(tmp_path)).acquire()
    try:
        assert second.token == 2 and second.owner()["holder"] == second.holder
    finally:
        second.release()


def test_expiry_is_judged_on_the_takers_clock_not_the_holders_timestamps(tmp_path):
    path = str(tmp_path / "lease")
    store = LocalLeaseStore(path)
    version = store.create(_record(7, written_at=0.0))  # "written" in 1970 by the other machine's clock
    clock = FakeClock()
    taker = StorageLock(str(tmp_path), path=path, heartbeat_s=1, stale_after_s=30, clock=clock)
    with pytest.raises(LockError, match="seen unchanged for 0 s"):
        taker.acquire()  # an old wall-clock stamp alone proves nothing
    # The holder renews (a new version) while the taker watches: never taken, however long.
    for _ in range(5):
        clock.now += 20
        version = store.replace(version, _record(7))
        with pytest.raises(LockError):
            taker.acquire()
    seen = []

    def sleep_and_tick(_s):  # a waiting taker observing the same version for the whole TTL
        seen.append(clock.now)
        clock.now += 1

    original = time.sleep
    time.sleep = sleep_and_tick
    try:
        taker.acquire(timeout_s=60)
    finally:
        time.sleep = original
    try:
        assert taker.token == 8
        assert 29 <= clock.now - seen[0] <= 32  # taken over after the TTL of observation, not before
    finally:
        taker.release()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    store = LocalLeaseStore(layout.lease_path(str(tmp_path)))
    store.create(_record(3, pid=proc.pid, host=socket.gethostname()))
    lock = StorageLock(str(tmp_path)).acquire()
    try:
        assert lock.token == 4
    finally:
        lock.release()


def test_many_processes_racing_from_a_barrier_hold_it_one_at_a_time_with_growing_tokens(tmp_path):
    """16 processes, 3 takes each, released in between: every holding is an interval on the
    machine's one monotonic clock; no two intervals overlap and tokens grow in interval order."""
    from tests.core._lease_child import race

    ctx = multiprocessing.get_context("spawn")
    processes, rounds = 16, 3
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=race, args=(str(tmp_path), barrier, rounds, queue)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    held = []
    for _ in procs:
        held += queue.get(timeout=300)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    held.sort(key=lambda h: h[1])
    assert len(held) == processes * rounds
    for (tok_a, _start_a, end_a), (tok_b, start_b, _end_b) in zip(held, held[1:]):
        assert end_a < start_b, "two processes held the lease at the same time"
        assert tok_b > tok_a
    assert sorted(t for t, _, _ in held) == list(range(1, processes * rounds + 1))


# --------------------------------------------------------------------------- fencing


def _start_holder(root: str, flags: tuple = ()) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "tests.core._lease_child", "hold", root, *flags], cwd=REPO,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("acquired "), line
    return proc


def _paused_holder_is_refused(root: str, flags: tuple = ()) -> None:
    holder = _start_holder(root, flags)
    try:
        holder.stdin.write("publish\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "published\n"  # while it holds the lease it may publish
        os.kill(holder.pid, signal.SIGSTOP)
        taker = StorageLock(root, heartbeat_s=0.2, stale_after_s=2, command="taker").acquire(timeout_s=60)
        try:
            assert taker.token == 2
            os.kill(holder.pid, signal.SIGCONT)
            holder.stdin.write("publish\n")
            holder.stdin.flush()
            reply = holder.stdout.readline()
            assert reply.startswith("refused "), reply
            message = json.loads(reply[len("refused "):])
            assert "token 1" in message and ("command taker" in message or "last renewed" in message
                                             or "lost the lease" in message)
            taker.check_publish("the taker's publish")  # the new holder still may
            # What the paused holder published before the pause stays; nothing after it.
            pointer = layout.transform_pointer(root)
            from core import storage

            assert storage.read_bytes(pointer) == b"from-the-paused-holder"
            transform_store.set_current(root, "from-the-taker", fence=taker)
            holder.stdin.write("publish\n")
            holder.stdin.flush()
            assert holder.stdout.readline().startswith("refused ")
            assert storage.read_bytes(pointer) == b"from-the-taker"
        finally:
            taker.release()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.kill()
        holder.wait()


def test_a_holder_paused_past_the_ttl_is_refused_after_a_takeover(tmp_path):
    _paused_holder_is_refused(str(tmp_path))


def test_a_fence_reads_the_stored_token_so_workers_can_check_it(tmp_path):
    lock = StorageLock(str(tmp_path)).acquire()
    fence = lock.fence()
    fence.check_publish("x")
    lock.release()
    with pytest.raises(FencedError, match="nobody"):
        fence.check_publish("window 20261127T0000Z v1")
    other = StorageLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(FencedError, match=r"refusing to publish window .*token 1.*token 2"):
            Fence(fence.path, fence.token, fence.holder).check_publish("window 20261127T0000Z v1")
    finally:
        other.release()


def test_a_holder_whose_renewals_stopped_refuses_on_its_own_clock(tmp_path):
    clock = FakeClock()
    lock = StorageLock(str(tmp_path), heartbeat_s=15, stale_after_s=40, clock=clock).acquire()
    try:
        lock.check()
        clock.now += 31  # 0.75 * TTL without a successful renewal: no longer counted valid
        with pytest.raises(FencedError, match="last renewed more than 30 s ago"):
            lock.check_publish("x")
    finally:
        lock.release()


# --------------------------------------------------------------------------- renewal


class FlakyStore(LocalLeaseStore):
    """A local store whose next ``failures`` replaces raise a transient error."""

    def __init__(self, path, failures):
        super().__init__(path)
        self.failures = failures
        self.renewed = threading.Event()

    def replace(self, version, record):
        if record.get("state") == "held" and self.failures > 0:
            self.failures -= 1
            raise OSError("connection reset by peer (injected)")
        out = super().replace(version, record)
        self.renewed.set()
        return out


def test_one_transient_renewal_error_is_retried_not_fatal(tmp_path):
    path = layout.lease_path(str(tmp_path))
    store = FlakyStore(path, failures=0)
    lock = StorageLock(str(tmp_path), heartbeat_s=0.05, stale_after_s=30, store=store).acquire()
    try:
        store.failures = 1
        before = store.read()[0]
        assert store.renewed.wait(30)
        store.renewed.clear()
        assert store.renewed.wait(30)
        assert store.failures == 0 and store.read()[0] > before
        lock.check_publish("after a failed renewal")
    finally:
        lock.release()


def test_a_renewal_that_finds_a_takeover_stops_the_holder(tmp_path):
    lock = StorageLock(str(tmp_path), heartbeat_s=0.05, stale_after_s=30).acquire()
    try:
        store = LocalLeaseStore(lock.path)
        version, _ = store.read()
        store.replace(version, _record(lock.token + 1, "thief"))
        lock._thread.join(timeout=30)  # the renewal loop ends once its conditional write loses
        with pytest.raises(FencedError, match="lost the lease .* to pid 1 on host elsewhere"):
            lock.check()
    finally:
        lock.release()
    assert store.read()[1]["holder"] == "thief"  # a lost lease is not "released" over the new holder


# --------------------------------------------------------------------------- S3 (moto) and GCS (fake)


def _s3_flags(s3_server) -> tuple:
    return (f"--s3_endpoint_url={s3_server.endpoint_url}", f"--s3_access_key_id={s3_server.access_key}",
            f"--s3_secret_access_key={s3_server.secret_key}", f"--s3_region_name={s3_server.region}")


def test_s3_lease_uses_conditional_puts(s3_server):
    uri = f"s3://{s3_server.create_bucket()}/store/locks/root.lease"
    store = S3LeaseStore(uri, client=s3_server.client())
    assert store.read() is None
    etag = store.create(_record(1, "a"))
    with pytest.raises(Conflict):
        store.create(_record(1, "b"))  # If-None-Match: *
    new = store.replace(etag, _record(2, "b"))
    with pytest.raises(Conflict):
        store.replace(etag, _record(2, "c"))  # If-Match on a stale ETag
    assert store.read() == (new, store.read()[1]) and store.read()[1]["holder"] == "b"


def test_s3_lease_holder_paused_past_the_ttl_is_refused(s3_server):
    from pipeline.options import pipeline_options

    flags = _s3_flags(s3_server)
    pipeline_options("runner_configs/direct.yaml", list(flags))
    root = f"s3://{s3_server.create_bucket()}/store"
    _paused_holder_is_refused(root, flags)


class _FakeBlob:
    def __init__(self, bucket, name):
        self.bucket, self.name, self.generation = bucket, name, None

    def upload_from_string(self, data, content_type=None, if_generation_match=None):
        from google.api_core import exceptions

        with self.bucket.lock:
            current = self.bucket.objects.get(self.name)
            live = 0 if current is None else current[0]
            if if_generation_match is not None and if_generation_match != live:
                raise exceptions.PreconditionFailed("generation mismatch")
            self.bucket.counter += 1
            self.bucket.objects[self.name] = (self.bucket.counter, bytes(data))
            self.generation = self.bucket.counter

    def download_as_bytes(self, if_generation_match=None):
        from google.api_core import exceptions

        with self.bucket.lock:
            current = self.bucket.objects.get(self.name)
            if current is None:
                raise exceptions.NotFound("gone")
            if if_generation_match is not None and if_generation_match != current[0]:
                raise exceptions.PreconditionFailed("generation mismatch")
            return current[1]


class _FakeBucket:
    """The calls GcsLeaseStore makes, with GCS's generation-precondition semantics."""

    def __init__(self):
        self.objects, self.counter, self.lock = {}, 0, threading.Lock()

    def blob(self, name):
        return _FakeBlob(self, name)

    def get_blob(self, name):
        with self.lock:
            if name not in self.objects:
                return None
            blob = _FakeBlob(self, name)
            blob.generation = self.objects[name][0]
            return blob


class _FakeClient:
    def __init__(self):
        self._bucket = _FakeBucket()

    def bucket(self, _name):
        return self._bucket


def test_gcs_lease_uses_generation_preconditions():
    client = _FakeClient()
    uri = "gs://bucket/store/locks/root.lease"
    store = GcsLeaseStore(uri, client=client)
    assert store.read() is None
    gen = store.create(_record(1, "a"))
    with pytest.raises(Conflict):
        store.create(_record(1, "b"))  # if_generation_match=0
    store.replace(gen, _record(2, "b"))
    with pytest.raises(Conflict):
        store.replace(gen, _record(2, "c"))
    clock = FakeClock()
    first = StorageLock("gs://bucket/store", heartbeat_s=10, stale_after_s=30, clock=clock,
                        store=GcsLeaseStore(uri, client=client))
    with pytest.raises(LockError, match="held by pid 1 on host elsewhere"):
        first.acquire()
    clock.now += 31
    first.acquire()  # seen unchanged for the TTL
    try:
        assert first.token == 3
        second = StorageLock("gs://bucket/store", heartbeat_s=10, stale_after_s=30, clock=clock,
                             store=GcsLeaseStore(uri, client=client))
        with pytest.raises(LockError, match="token 3"):
            second.acquire()
        clock.now += 31
        second.acquire()  # first stopped renewing (its renewal is 10 s away)
        assert not first._renew_once() and second.token == 4
        with pytest.raises(FencedError, match="lost the lease"):
            first.check()
        second.release()
    finally:
        first.release()
