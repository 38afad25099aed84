"""`ctpipe train` as two MultiWorkerMirroredStrategy workers on 127.0.0.1 (CPU, tf-keras).

Each worker is a real ``python -m pipeline.cli train`` process with its own TF_CONFIG. One worker
is killed with SIGKILL in the middle of an epoch (seen through the per-batch progress file the
trainer writes with ``ctpipe train --progress-dir``), and the other fails on its next collective
op. Both are restarted with the same input: both train to the end, the chief's run resumes from
the BackupAndRestore backup (so it runs fewer epochs than configured, and its lineage says from
which epoch), only the chief evaluates and pushes, and the other worker exits 0.

One scenario rather than a separate clean run first: the restarted pair *is* a complete
two-worker training, and every worker start costs ~20 s of imports on a 2-core machine.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests._procs import free_port

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A deadline, not a pace: under a busy CI machine (a Flink job on the other pytest worker) the first
# epochs took more than 240 s once, though ~60 s is usual.
START_TIMEOUT_S = 900.0


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two sealed one-hour windows (small: the point is the process choreography)."""
    from pipeline import synthetic
    from pipeline.backfill import run_backfill
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    base = tmp_path_factory.mktemp("dist")
    synthetic.write_jsonl(str(base / "events"), synthetic.generate(dt.datetime(2026, 11, 27), 2, 500),
                          rows_per_hour=503)
    data = {"storage": {"root": str(base / "store")},
            "source": {"files": {"uri": str(base / "events" / "*.jsonl")}},
            "registry": {"uri": str(base / "registry"), "model_name": "sensors"},
            # Gating is not under test here: any candidate that learned something is pushed.
            "gate": {"thresholds": [{"metric": "auc", "lower_bound": 0.6}]}}
    run_backfill(config_from_dict(data), pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml")),
                 None, None)
    return base, data


def write_config(base, data, name: str, **training) -> str:
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(dict(data, training=dict(training, backup_dir=str(base / "backup")))))
    return str(path)


class Workers:
    """Two `ctpipe train` processes forming one MultiWorkerMirroredStrategy cluster."""

    def __init__(self, base, config_path: str, label: str):
        self.ports = [free_port(), free_port()]
        self.progress_dir = base / f"progress-{label}"
        self.logs = [base / f"{label}-worker{i}.out" for i in range(2)]
        self.errs = [base / f"{label}-worker{i}.err" for i in range(2)]
        cluster = {"worker": [f"127.0.0.1:{p}" for p in self.ports]}
        self.procs = []
        for index in range(2):
            env = {**os.environ, "PYTHONPATH": REPO,
                   "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
            with open(self.logs[index], "wb") as out, open(self.errs[index], "wb") as err:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "pipeline.cli", "train", "--config", config_path, "--json",
                     "--progress-dir", str(self.progress_dir)],
                    cwd=REPO, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL))

    def progress(self, index: int):
        path = self.progress_dir / f"progress-worker-{index}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def tail(self, index: int) -> str:
        return (self.errs[index].read_text(errors="replace")[-3000:] + "\n--- stdout ---\n"
                + self.logs[index].read_text(errors="replace")[-1500:])

    def wait(self, index: int, timeout_s: float) -> int:
        try:
            return self.procs[index].wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"worker {index} still running after {timeout_s:.0f} s:\n{self.tail(index)}")

    def outcome(self, index: int) -> dict:
        text = self.logs[index].read_text()
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pytest.fail(f"worker {index} printed no JSON outcome:\n{self.tail(index)}")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(2400)  # three two-worker trainings; ~4 min on a quiet machine, 15+ on a loaded one
def test_killed_worker_resumes_from_backup_and_only_the_chief_pushes(store):
    base, data = store
    epochs = 6
    config_path = write_config(base, data, "crash", epochs=epochs, batch_size=16)
    first = Workers(base, config_path, "crash-1")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # mid-epoch: at least 2 epochs backed up, and a batch of the next one done
            progress = first.progress(1)
            if progress and progress["epoch"] >= 2 and progress["batch"] >= 1:
                break
            for i, proc in enumerate(first.procs):
                assert proc.poll() is None, f"worker {i} ended before the kill:\n{first.tail(i)}"
            assert time.monotonic() < deadline, f"no progress file after {START_TIMEOUT_S:.0f} s:\n{first.tail(1)}"
            time.sleep(0.01)
        first.procs[1].send_signal(signal.SIGKILL)
        assert first.wait(1, 120) == -signal.SIGKILL
        # The chief fails on its next collective op instead of training on alone.
        chief_code = first.wait(0, START_TIMEOUT_S)
    finally:
        first.kill_all()
    killed_at = progress["epoch"]
    assert chief_code != 0, first.tail(0)
    assert "Collective ops is aborted" in first.tail(0) or "collective" in first.tail(0).lower(), first.tail(0)
    assert not first.logs[0].read_text().strip(), "the failed chief printed an outcome"
    backups = [name for name in os.listdir(base / "backup") if name.startswith("backup-")]
    assert backups, "BackupAndRestore left no backup to resume from"

    from training.registry import open_registry

    registry = open_registry(data["registry"]["uri"])
    assert registry.list_versions("sensors") == []  # nothing pushed by the crashed run

    second = Workers(base, config_path, "crash-2")
    try:
        codes = [second.wait(i, START_TIMEOUT_S) for i in range(2)]
    finally:
        second.kill_all()
    assert codes == [0, 0], [second.tail(i) for i in range(2)]
    chief, other = second.outcome(0), second.outcome(1)
    # Both workers trained (the other one to the end of fit), under one strategy of two workers.
    assert chief["role"] == "chief" and other["role"] == "worker"
    for outcome in (chief, other):
        assert outcome["strategy"] == "MultiWorkerMirroredStrategy" and outcome["workers"] == 2
    assert second.progress(1)["state"] == "train_end"
    # Resumed: started at an epoch the killed run had reached (not 0) and ran only the rest.
    assert 0 < chief["resumed_from_epoch"] <= killed_at, (chief["resumed_from_epoch"], killed_at)
    assert chief["epochs_run"] == epochs - chief["resumed_from_epoch"] < epochs
    assert other["resumed_from_epoch"] == chief["resumed_from_epoch"]
    # Only the chief evaluated and pushed.
    assert chief["pushed"] and chief["version"] == 1, chief["blessing"]
    assert not other["pushed"] and "blessing" not in other
    assert [v.version for v in registry.list_versions("sensors")] == [1]
    lineage = registry.get("sensors", 1).lineage
    assert lineage["training"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert lineage["training"]["resumed_from_epoch"] == chief["resumed_from_epoch"]
    assert lineage["training"]["epochs_run"] == chief["epochs_run"]
    # A finished run removes its backup: the next training on this input starts from scratch.
    assert not any(os.listdir(base / "backup" / name) for name in backups if (base / "backup" / name).exists())

    # A later two-worker run, now that production exists: each worker screens the new range with
    # the production model before it trains. Under MultiWorkerMirroredStrategy that is only
    # possible once the strategy (the collective runtime) exists, before the first TF op.
    from pipeline import synthetic
    from pipeline.backfill import run_backfill
    from pipeline.config import config_from_dict
    from pipeline.options import pipeline_options

    assert registry.get_alias("sensors", "production") == 1
    later_events = synthetic.generate(dt.datetime(2026, 11, 27, 2), 1, 500, seed=11, first_index=10_000)
    synthetic.write_jsonl(str(base / "events-2"), later_events, rows_per_hour=503)
    later_data = dict(data, source={"files": {"uri": str(base / "events-2" / "*.jsonl")}})
    run_backfill(config_from_dict(later_data), pipeline_options(os.path.join(REPO, "runner_configs", "direct.yaml")),
                 None, None)
    third = Workers(base, write_config(base, data, "later", epochs=2, batch_size=16), "later")
    try:
        codes = [third.wait(i, START_TIMEOUT_S) for i in range(2)]
    finally:
        third.kill_all()
    assert codes[1] == 0 and codes[0] in (0, 10), [third.tail(i) for i in range(2)]  # 10: the gate rejected
    chief = third.outcome(0)
    assert chief["role"] == "chief" and chief["workers"] == 2
    assert chief["screening"]["production_version"] == 1 and chief["screening"]["skipped"] is None, chief["screening"]
    assert [w["window_id"] for w in chief["windows"]][-1] == "20261127T0200Z"
