"""The controller's state across checks, manual requests and a deposed leader, on fake sealed
windows (manifests only) and a real leader lease: nothing here trains a model."""
from __future__ import annotations

import json
import os

import pytest

from core import layout, storage
from core.errors import FencedError
from core.lock import StorageLock
from pipeline import control_loop
from pipeline.config import config_from_dict

HOUR_MS = 3600_000
T0 = 1_795_737_600_000  # 2026-11-27T00:00Z


def _window(root, hour, verdict="PASS"):
    wid = layout.window_id(T0 + hour * HOUR_MS)
    path = os.path.join(root, "windows", wid, "v1")
    os.makedirs(path)
    with open(os.path.join(path, "MANIFEST.json"), "w") as handle:
        json.dump({"window_id": wid, "version": 1, "validation": {"verdict": verdict}, "schema_version": 1,
                   "transform_fingerprint": "fp", "start_ms": T0 + hour * HOUR_MS,
                   "end_ms": T0 + (hour + 1) * HOUR_MS, "content_digest": wid, "quality": {}}, handle)
    return f"{wid} v1"


@pytest.fixture
def setup(tmp_path):
    root = str(tmp_path / "store")
    config = config_from_dict({"storage": {"root": root}, "registry": {"uri": str(tmp_path / "registry")},
                               "controller": {"lease_ttl": "6s", "policies": {"new_windows": 2}}})
    lease = control_loop.leader_lease(config).acquire()
    yield config, root, lease
    lease.release()


def test_evidence_accumulates_across_checks_and_a_request_of_trained_inputs_is_consumed(setup):
    from core.version import code_version
    from pipeline.controller import config_hash, select_windows, training_run_id

    config, root, lease = setup
    first = _window(root, 0)
    out = control_loop.run_once(config, lease)
    assert out["outcome"] == "no-run" and out["new_windows"] == [first]
    assert out["decision"]["waiting"][0]["status"] == "1 of 2 new PASS window(s) since the last run"
    _window(root, 1, verdict="QUARANTINED")  # seen, but not PASS: no evidence
    out = control_loop.run_once(config, lease)
    assert out["outcome"] == "no-run" and len(out["new_windows"]) == 1
    state = json.loads(open(layout.controller_state_path(root)).read())  # what a restart reads
    assert state["pending_pass"] == [first] and len(state["seen"]) == 2 and len(state["history"]) == 2

    # A request for inputs whose run finished before: consumed, nothing trained, evidence cleared.
    chosen, _, fingerprint = select_windows(config)
    run_id = training_run_id(chosen, fingerprint, config_hash(config), code_version())
    storage.write_json_atomic(layout.run_record_path(root, run_id), {
        "kind": "train", "run_id": run_id, "version": None, "blessing": {"blessed": False, "checks": []}})
    request = control_loop.request_training(root, "check")
    out = control_loop.run_once(config, lease)
    assert out["outcome"] == "already-trained" and out["run"]["run_id"] == run_id
    assert [f["policy"] for f in out["decision"]["fired"]] == ["manual"]
    state = control_loop.read_state(root)
    assert state["pending_pass"] == [] and request["id"] in state["consumed_triggers"]
    assert state["runs_by_outcome"]["already-trained"] == 1
    assert not os.path.exists(layout.trigger_path(root, request["id"]))
    # The same request file again (a crash between the state write and its removal): not a new run.
    storage.write_json_atomic(layout.trigger_path(root, request["id"]), request)
    out = control_loop.run_once(config, lease)
    assert out["outcome"] == "no-run" and not os.path.exists(layout.trigger_path(root, request["id"]))


def test_a_deposed_leader_writes_no_state(setup):
    config, root, lease = setup
    _window(root, 0)
    control_loop.run_once(config, lease)
    before = open(layout.controller_state_path(root)).read()
    ticks = iter(range(0, 10_000, 10))  # the taker's clock: every read is 10 s later
    taker = StorageLock(root, path=layout.lease_path(root, "controller"), heartbeat_s=1, stale_after_s=6,
                        clock=lambda: next(ticks), command="controller")
    taker.acquire(timeout_s=1000)
    try:
        assert taker.token == lease.token + 1
        _window(root, 1)
        with pytest.raises(FencedError):
            control_loop.run_once(config, lease)
        assert open(layout.controller_state_path(root)).read() == before
    finally:
        taker.release()
