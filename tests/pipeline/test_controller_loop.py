"""``ctpipe controller`` on real sealed windows and a real file registry (one backfill shared by the
module, copied per test).

- two manual requests make one run; a later request of the same inputs trains nothing, also
  after the controller's state is lost or the run record is gone (the registry's lineage);
- two controller processes on one root: the leader (its own UTS namespace, so its lease names
  another host and only the TTL can end it) is killed with SIGKILL mid-training; the standby takes
  over within 2x the lease TTL and completes the run; exactly one model version exists.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from core import layout, storage
from core.lease_stores import read_record
from pipeline import synthetic
from pipeline.config import config_from_dict

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
TTL_S = 6
LEADER_HOST = "ctl-leader-a"


@pytest.fixture(scope="module")
def sealed(tmp_path_factory, ):
    from pipeline.backfill import run_backfill
    from pipeline.options import pipeline_options

    base = tmp_path_factory.mktemp("controller")
    synthetic.write_jsonl(str(base / "events"), synthetic.generate(START, 2, 150), rows_per_hour=150)
    config = config_from_dict({"storage": {"root": str(base / "store")},
                               "source": {"files": {"uri": str(base / "events" / "*.jsonl")}}})
    run_backfill(config, pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml")), None, None)
    return base


def _setup(sealed, tmp_path, **training):
    shutil.copytree(sealed / "store", tmp_path / "store")
    data = {"storage": {"root": str(tmp_path / "store")},
            "source": {"files": {"uri": str(sealed / "events" / "*.jsonl")}},
            "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"},
            "training": {"epochs": 1, "batch_size": 32, "backup_dir": str(tmp_path / "backup"), **training},
            "gate": {"thresholds": [{"metric": "example_count", "lower_bound": 1}]},
            "controller": {"lease_ttl": f"{TTL_S}s", "poll_interval": "1s",
                           "policies": {"new_windows": None, "drift": False}}}
    path = tmp_path / "ctpipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, config_from_dict(data)


def committed_versions(registry_dir, model="sensors") -> list:
    """Versions with a COMMITTED marker, read from the registry directory itself."""
    base = os.path.join(registry_dir, model, "versions")
    if not os.path.isdir(base):
        return []
    return sorted(int(n) for n in os.listdir(base) if os.path.exists(os.path.join(base, n, "COMMITTED.json")))


def test_two_triggers_make_one_run_and_a_repeat_of_the_same_inputs_trains_nothing(sealed, tmp_path):
    from pipeline import control_loop

    _path, config = _setup(sealed, tmp_path)
    root = config.storage.root
    first, second = (control_loop.request_training(root, reason) for reason in ("new labels", "retry"))
    lease = control_loop.leader_lease(config).acquire()
    try:
        out = control_loop.run_once(config, lease)
        assert out["outcome"] == "blessed" and [f["policy"] for f in out["decision"]["fired"]] == ["manual"]
        assert committed_versions(tmp_path / "registry") == [1]
        record = storage.read_json(layout.run_record_path(root, out["run"]["run_id"]))
        assert {r["id"] for r in record["trigger"]["requests"]} == {first["id"], second["id"]}
        assert record["trigger"]["controller"]["leader_token"] == lease.token
        assert record["range"]["windows"] == 2 and record["range"]["max_windows"] == config.training.max_windows
        assert not os.listdir(layout.trigger_dir(root))  # both consumed

        assert control_loop.run_once(config, lease)["outcome"] == "no-run"  # nothing pending
        control_loop.request_training(root, "again")
        again = control_loop.run_once(config, lease)
        assert again["outcome"] == "already-trained" and again["run"]["run_id"] == out["run"]["run_id"]

        # The state lost and the run record gone: the registry's lineage still names the run.
        os.remove(layout.controller_state_path(root))
        os.remove(layout.run_record_path(root, out["run"]["run_id"]))
        control_loop.request_training(root, "after a lost state")
        reused = control_loop.run_once(config, lease)
        assert reused["outcome"] == "reused" and reused["run"]["version"] == 1
        assert committed_versions(tmp_path / "registry") == [1]
        state = control_loop.read_state(root)
        assert state["runs_by_outcome"]["reused"] == 1 and not state["pending_pass"]
    finally:
        lease.release()


def _wait(condition, timeout_s, what, procs=()):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{what}: process {proc.args} exited with {proc.returncode} first")
        time.sleep(0.05)  # polling a condition, not waiting out a race
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _controller(config_path, log, *extra, prefix=()):
    cmd = [*prefix, sys.executable, "-m", "pipeline.cli", "controller", "--config", str(config_path), "--json",
           "--lock-timeout", "120", *extra]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env, cwd=REPO)


def test_kill_9_of_the_leader_mid_run_the_standby_takes_over_and_pushes_once(sealed, tmp_path):
    from pipeline import control_loop

    config_path, config = _setup(sealed, tmp_path, epochs=30, batch_size=8)
    root = config.storage.root
    lease_path = layout.lease_path(root, "controller")
    progress = tmp_path / "progress"
    # The leader in its own UTS namespace: its lease names another host, so the standby cannot
    # take it over by seeing its pid gone, only by watching it go unrenewed for the TTL.
    leader = _controller(config_path, tmp_path / "leader.log", "--progress-dir", str(progress),
                         prefix=("unshare", "--user", "--map-root-user", "--uts", "sh", "-c",
                                 f'hostname {LEADER_HOST} && exec "$0" "$@"'))
    standby = None
    try:
        # (each replica loads the training step's modules before it stands by: tens of seconds)
        record = _wait(lambda: (r := read_record(lease_path)) and r.get("state") == "held" and r, 300,
                       "the first controller takes the leader lease", [leader])
        assert record["host"] == LEADER_HOST and record["pid"] == leader.pid
        standby = _controller(config_path, tmp_path / "standby.log", "--checks", "1")
        _wait(lambda: "standby: the leader is" in (tmp_path / "standby.log").read_text(), 300,
              "the second controller stands by", [standby, leader])
        # The request only now: the leader's next check consumes it and trains while the standby waits.
        control_loop.request_training(root, "kill test")
        _wait(lambda: any(progress.glob("progress-*.json")), 300, "the leader trains", [leader])
        assert committed_versions(tmp_path / "registry") == []  # killed before its push
        leader.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.wait(30)
        taken = _wait(lambda: (r := read_record(lease_path)) and r.get("pid") == standby.pid and r, 2 * TTL_S,
                      "the standby takes over within 2x the lease TTL", [standby])
        assert taken["token"] == record["token"] + 1 and time.monotonic() - killed <= 2 * TTL_S
        out, _ = standby.communicate(timeout=600)
        assert standby.returncode == 0, (tmp_path / "standby.log").read_text()[-3000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["outcome"] == "blessed" and summary["leader"]["token"] == taken["token"]
        assert committed_versions(tmp_path / "registry") == [1]
        record = storage.read_json(layout.run_record_path(root, summary["run"]["run_id"]))
        assert record["trigger"]["controller"]["leader_token"] == taken["token"]
        assert [r["reason"] for r in record["trigger"]["requests"]] == ["kill test"]
        assert not os.listdir(layout.trigger_dir(root))
        assert read_record(lease_path)["state"] == "released"
    finally:
        for proc in (leader, standby):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(30)
