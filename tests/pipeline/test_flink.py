"""`ctpipe backfill` on a real local Apache Flink 1.19 session cluster (a JobManager and two
TaskManagers, Beam's Flink job server; scripts/services.sh) seals the same bytes as DirectRunner.

Both runs go through the ``ctpipe`` command line in this process (LOOPBACK: the Python workers
run here, the Flink operators in the TaskManager JVMs). That the second run really executed on
the cluster is read from Flink's own REST API, not from ctpipe.
"""
from __future__ import annotations

import glob
import json
import os

import pytest

from pipeline.cli.main import main
from tests._stores import read_ids_with_schema, tree_digest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLINK_LOCAL = os.path.join(REPO, "runner_configs", "flink-local.yaml")
DIRECT = os.path.join(REPO, "runner_configs", "direct.yaml")


def _config(tmp_path, name, events_glob) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({
        "storage": {"root": str(tmp_path / name)},
        "source": {"files": {"uri": events_glob}},
        "registry": {"uri": str(tmp_path / f"{name}-registry"), "model_name": "sensors"}}))
    return str(path)


def _dead_letters(root) -> list[str]:
    """Every dead-letter record, order-free (the file names carry the run id)."""
    lines = []
    for path in glob.glob(os.path.join(root, "deadletter", "*", "*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            lines.extend(line.strip() for line in handle if line.strip())
    return sorted(lines)


def _beam_jobs(flink_cluster) -> dict[str, str]:
    """Flink's own list of the jobs it ran: job id -> state, for Beam's jobs."""
    return {job["jid"]: job["state"] for job in flink_cluster.rest("/jobs/overview")["jobs"]
            if job["name"].startswith("BeamApp-")}


def test_backfill_on_flink_seals_the_same_bytes_as_direct_runner(flink_cluster, make_events, tmp_path, monkeypatch,
                                                                  capsys):
    events, gen = make_events(hours=2, rows_per_hour=120)
    for name, value in flink_cluster.runner_env.items():
        monkeypatch.setenv(name, value)
    direct_cfg, flink_cfg = _config(tmp_path, "direct", events), _config(tmp_path, "flink", events)

    assert main(["backfill", "--config", direct_cfg, "--runner-config", DIRECT, "--json"]) == 0
    direct_record = json.loads(capsys.readouterr().out)
    jobs_before = _beam_jobs(flink_cluster)
    assert main(["backfill", "--config", flink_cfg, "--runner-config", FLINK_LOCAL, "--json"]) == 0
    flink_record = json.loads(capsys.readouterr().out)

    # The run executed on the cluster: Flink lists new Beam jobs (schema inference + the backfill), all FINISHED.
    new_jobs = {jid: state for jid, state in _beam_jobs(flink_cluster).items() if jid not in jobs_before}
    assert len(new_jobs) == 2 and set(new_jobs.values()) == {"FINISHED"}, new_jobs

    direct_root, flink_root = str(tmp_path / "direct"), str(tmp_path / "flink")
    direct_files, flink_files = tree_digest(direct_root), tree_digest(flink_root)
    assert len(direct_files) == 12  # 2 windows x (raw, data, stats, anomalies, provenance, MANIFEST)
    assert flink_files == direct_files  # every file under windows/, MANIFEST.json included, byte for byte
    for name in ("schema/v1/schema.pbtxt",):
        with open(os.path.join(direct_root, name), "rb") as a, open(os.path.join(flink_root, name), "rb") as b:
            assert a.read() == b.read(), name
    assert _dead_letters(flink_root) == _dead_letters(direct_root) != []
    assert flink_record["counters"] == direct_record["counters"]
    # Independently of ctpipe's readers: the sealed raw records are the generator's valid events, once each.
    ids = read_ids_with_schema(flink_root)
    assert sorted(ids) == sorted(gen.valid_ids) and len(set(ids)) == len(ids)


@pytest.fixture
def worker_pool(tmp_path):
    """A Beam worker pool (the EXTERNAL environment deploy/k8s runs beside each TaskManager) as its
    own process group; its SDK workers run ctpipe's DoFns from this checkout."""
    from tests._procs import Service, free_port, venv_bin

    port = free_port()
    pool = Service("beam-worker-pool", [venv_bin("python"), "-m", "apache_beam.runners.worker.worker_pool_main",
                                        f"--service_port={port}"], port, tmp_path / "worker-pool.log",
                   env={"PYTHONPATH": REPO, "PATH": f"{os.path.dirname(venv_bin('python'))}{os.pathsep}"
                                                    f"{os.environ['PATH']}"})
    pool.start()
    yield pool
    try:
        os.killpg(pool.proc.pid, 9)  # the pool and the SDK workers it started
    except ProcessLookupError:
        pass
    pool.proc.wait(timeout=30)


def test_an_external_worker_pool_seals_the_same_bytes(flink_cluster, worker_pool, make_events, tmp_path,
                                                      monkeypatch, capsys):
    """The Python DoFns run in a separate Beam worker pool (environment_type EXTERNAL), not in the
    submitting process: the windows are still DirectRunner's, byte for byte."""
    events, gen = make_events(hours=2, rows_per_hour=60)
    for name, value in flink_cluster.runner_env.items():
        monkeypatch.setenv(name, value)
    pool_runner = tmp_path / "runner-flink-pool.yaml"
    with open(FLINK_LOCAL, encoding="utf-8") as handle:
        text = handle.read()
    assert "environment_type: LOOPBACK" in text
    external = f"environment_type: EXTERNAL\nenvironment_config: 127.0.0.1:{worker_pool.port}"
    pool_runner.write_text(text.replace("environment_type: LOOPBACK", external))
    direct_cfg, pool_cfg = _config(tmp_path, "direct", events), _config(tmp_path, "pool", events)
    assert main(["backfill", "--config", direct_cfg, "--runner-config", DIRECT, "--json"]) == 0
    capsys.readouterr()
    jobs_before = _beam_jobs(flink_cluster)
    assert main(["backfill", "--config", pool_cfg, "--runner-config", str(pool_runner), "--json"]) == 0
    new_jobs = {jid: state for jid, state in _beam_jobs(flink_cluster).items() if jid not in jobs_before}
    assert len(new_jobs) == 2 and set(new_jobs.values()) == {"FINISHED"}, new_jobs
    # The pool, not this process, ran the Python side: it logs every SDK worker it starts.
    assert worker_pool.log_path.read_text(errors="replace").count("Starting worker") >= 1
    direct_root, pool_root = str(tmp_path / "direct"), str(tmp_path / "pool")
    assert tree_digest(pool_root) == tree_digest(direct_root) and len(tree_digest(direct_root)) == 12
    assert _dead_letters(pool_root) == _dead_letters(direct_root)
    assert sorted(read_ids_with_schema(pool_root)) == sorted(gen.valid_ids)
