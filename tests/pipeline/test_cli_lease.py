"""The storage root's lease as commands meet it: a writer finding it held refuses at once
(--lock-timeout 0) naming the holder, or says it waits and goes on once the holder releases;
SIGTERM while a command holds it releases it. `windows release` is the command here because it
needs no Beam or TensorFlow (seconds per run); tests/pipeline/test_one_writer.py runs backfill,
stream and train together."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from core import layout, storage
from core.lock import StorageLock
from pipeline.lease import handle_sigterm, root_lease, stop_if_terminating

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WID = "20261127T0100Z"


def _quarantined_window(root: str) -> None:
    """The MANIFEST of a QUARANTINED window (what `windows release` acts on), written by hand."""
    start = layout.window_id_start_ms(WID)
    storage.write_json_atomic(os.path.join(layout.window_dir(root, WID, 1), layout.MANIFEST), {
        "format": "ctpipe.window/1", "window_id": WID, "version": 1, "start_ms": start,
        "end_ms": start + 3_600_000, "record_count": 0, "files": [], "transform_fingerprint": "f",
        "schema_version": 1, "validation": {"verdict": "QUARANTINED", "reasons": ["drift"]}})


def _release(root: str, *flags: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    config = os.path.join(root, "ctpipe.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        json.dump({"storage": {"root": root}}, handle)  # JSON is YAML
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "windows", "release", WID, "--reason", "ok",
                             "--by", "tester", "--config", config, *flags], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_writer_refuses_at_once_naming_the_holder(tmp_path):
    root = str(tmp_path)
    _quarantined_window(root)
    with StorageLock(root, command="backfill"):
        proc = _release(root, "--lock-timeout", "0")
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 5, err
    assert f"held by pid {os.getpid()} on host" in err and "command backfill" in err and "--lock-timeout" in err
    assert not os.path.exists(os.path.join(layout.window_dir(root, WID, 1), layout.RELEASE))


def test_a_waiting_writer_says_whom_it_waits_for_and_goes_on_after_the_release(tmp_path):
    root = str(tmp_path)
    _quarantined_window(root)
    holder = StorageLock(root, command="backfill").acquire()
    try:
        proc = _release(root, "--lock-timeout", "300")
        line = proc.stderr.readline()  # a condition, not a sleep: it prints this once it waits
        assert "waiting up to 300 s for the storage root's lease, held by" in line and "command backfill" in line
        assert proc.poll() is None
    finally:
        holder.release()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "released 20261127T0100Z v1 by tester" in out
    record = StorageLock(root).owner()
    assert record["state"] == "released" and record["token"] == 2 and record["command"] == "windows release"


def test_sigterm_releases_the_lease_and_stops_at_the_next_safe_point(tmp_path):
    """In this process: the first SIGTERM only marks the holding (graceful), the next safe point
    raises TerminatedError, and the lease is released on the way out."""
    from core.errors import EXIT_INTERRUPTED, TerminatedError
    from pipeline import lease

    root = str(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(TerminatedError, match="SIGTERM: stopped cycle 3 before sealing") as caught:
            with handle_sigterm("ctpipe stream", graceful=True):
                with root_lease(root, "stream", 0, graceful=True) as held:
                    stop_if_terminating("cycle 3 before ingest")  # nothing yet
                    os.kill(os.getpid(), signal.SIGTERM)
                    assert held.owner()["state"] == "held"  # still running: graceful
                    stop_if_terminating("cycle 3 before sealing")
        assert caught.value.exit_code == EXIT_INTERRUPTED
        assert StorageLock(root).owner()["state"] == "released"
        assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
    finally:
        lease._terminating.clear()


def test_sigterm_stops_a_non_graceful_holder_at_once_and_releases(tmp_path):
    from core.errors import TerminatedError
    from pipeline import lease

    root = str(tmp_path)
    try:
        with pytest.raises(TerminatedError, match="SIGTERM: backfill stopped at once"):
            with root_lease(root, "backfill", 0):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10_000_000):  # the handler runs between bytecodes: well before the end
                    pass
                raise AssertionError("SIGTERM did not stop the block")
        assert StorageLock(root).owner()["state"] == "released"
    finally:
        lease._terminating.clear()


def test_sigterm_while_waiting_for_the_lease_gives_up_the_wait(tmp_path):
    from core.errors import TerminatedError
    from pipeline import lease

    root = str(tmp_path)
    holder = StorageLock(root, command="backfill").acquire()
    try:
        with handle_sigterm("ctpipe stream", graceful=True):
            lease._terminating.set()  # what the first SIGTERM does
            with pytest.raises(TerminatedError, match="while waiting for the storage root's lease"):
                with root_lease(root, "stream", 300, graceful=True):
                    raise AssertionError("took a lease that is held")
        assert holder.owner()["holder"] == holder.holder  # untouched
    finally:
        lease._terminating.clear()
        holder.release()
