"""deploy/airflow/ctpipe_dag.py in a real Airflow 3.

Airflow lives in a virtual environment of its own (``make airflow``: .airflow-venv from
deploy/airflow/requirements.lock, plus a migrated sqlite metadata database that each test copies),
because its dependencies conflict with ctpipe's. The tests run Airflow's own DagBag on the DAG
folder and check the task graph, retries and exit-code handling that README and deploy/README.md
describe; one runs the DAG (``dag.test()``) with the real ctpipe CLI against a real Kafka broker:
Kafka is drained into sealed windows, and the candidate the gate rejects (exit 10) leaves the
controller task (`ctpipe controller --once`, whose policy starts the run) *skipped*, not failed
and not retried, while the DAG run succeeds.
"""
import datetime as dt
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from core.errors import EXIT_CODES, EXIT_GATE_REJECTED, EXIT_OK
from tests._cli import parses_as_ctpipe

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DAG_DIR = ROOT / "deploy" / "airflow"
AIRFLOW_VENV = ROOT / ".airflow-venv"
DAG_ID = "ctpipe_continuous_training"
AIRFLOW_TIMEOUT_S = 900

# Runs inside the Airflow virtual environment: the DagBag of each folder given, as JSON.
_INSPECT = r'''
import json, sys
from airflow.dag_processing.dagbag import DagBag

out = {}
for folder in sys.argv[1:]:
    bag = DagBag(dag_folder=folder)
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "schedule": str(dag.schedule), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
            "tasks": {t.task_id: {
                "type": type(t).__name__, "upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                "skip_on_exit_code": sorted(t.skip_on_exit_code or []), "bash_command": t.bash_command,
                "execution_timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
            } for t in dag.tasks}}
    out[folder] = {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": dags}
print("RESULT " + json.dumps(out))
'''

# Runs the DAG once in-process (Airflow's dag.test()) and prints the task instances' states.
_RUN = r'''
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session

bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.dags[sys.argv[2]]
run = dag.test()
with create_session() as session:
    tis = session.query(TaskInstance).filter(TaskInstance.dag_id == dag.dag_id,
                                             TaskInstance.run_id == run.run_id).all()
    states = {t.task_id: {"state": str(t.state), "try_number": t.try_number} for t in tis}
print("RESULT " + json.dumps({"run_state": str(run.state), "tasks": states}))
'''


def airflow_python() -> Path:
    python = AIRFLOW_VENV / "bin" / "python"
    template = AIRFLOW_VENV / "db-template" / "airflow.db"
    if not python.exists() or not template.exists():
        pytest.fail(f"no Airflow environment at {AIRFLOW_VENV}: run `make airflow` (`make test` does)")
    return python


def run_airflow(script: str, args: list, tmp_path: Path, variables: dict | None = None) -> dict:
    """Run ``script`` with the Airflow venv's Python, a fresh copy of the migrated metadata
    database and ``variables`` as Airflow Variables (AIRFLOW_VAR_*); returns its RESULT JSON."""
    python = airflow_python()
    home = tmp_path / "airflow-home"
    home.mkdir(exist_ok=True)
    shutil.copy(AIRFLOW_VENV / "db-template" / "airflow.db", home / "airflow.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "PYTHONPATH"}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAG_DIR),
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}")
    env.update({f"AIRFLOW_VAR_{k.upper()}": v for k, v in (variables or {}).items()})
    proc = subprocess.run([str(python), "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=AIRFLOW_TIMEOUT_S)
    (tmp_path / "airflow.log").write_text(proc.stdout + proc.stderr)
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, f"Airflow exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return json.loads(results[-1][len("RESULT "):])


def render_defaults(command: str) -> str:
    """The command as Airflow renders it when no Variable is set (each default of var.value.get)."""
    return jinja2.Template(command).render(var={"value": {}})


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dagbag")
    broken = tmp / "broken-dags"
    broken.mkdir()
    (broken / "broken_dag.py").write_text("from airflow.sdk import DAG\nimport ctpipe_module_that_is_not_there\n")
    out = run_airflow(_INSPECT, [DAG_DIR, broken], tmp)
    return out[str(DAG_DIR)], out[str(broken)]


def test_dagbag_imports_the_dag_without_errors(dagbag):
    real, _ = dagbag
    assert real["import_errors"] == {}
    assert list(real["dags"]) == [DAG_ID]


def test_dagbag_reports_an_import_error(dagbag):
    """The check above can fail: a DAG file that cannot be imported is reported by the DagBag."""
    _, broken = dagbag
    assert broken["dags"] == {}
    (error,) = broken["import_errors"].values()
    assert "ctpipe_module_that_is_not_there" in error


def test_task_graph_retries_and_schedule(dagbag):
    dag = dagbag[0]["dags"][DAG_ID]
    tasks = dag["tasks"]
    assert set(tasks) == {"stream_until_idle", "controller"}
    assert tasks["stream_until_idle"]["upstream"] == [] and tasks["controller"]["upstream"] == ["stream_until_idle"]
    assert all(t["type"] == "BashOperator" for t in tasks.values())
    # deploy/README.md: hourly at minute 20, one run at a time, no catch-up, two retries per task.
    assert dag["schedule"] == "20 * * * *" and dag["catchup"] is False and dag["max_active_runs"] == 1
    assert {t["retries"] for t in tasks.values()} == {2}
    assert all(t["execution_timeout_s"] for t in tasks.values())


def test_exit_10_skips_the_controller_and_no_ctpipe_exit_code_skips_stream(dagbag):
    tasks = dagbag[0]["dags"][DAG_ID]["tasks"]
    assert tasks["controller"]["skip_on_exit_code"] == [EXIT_GATE_REJECTED]
    # Every other ctpipe exit code of stream fails the task (and Airflow retries it).
    assert not set(tasks["stream_until_idle"]["skip_on_exit_code"]) & (set(EXIT_CODES) - {EXIT_OK})


def test_commands_are_real_ctpipe_command_lines(dagbag):
    tasks = dagbag[0]["dags"][DAG_ID]["tasks"]
    for task_id, task in tasks.items():
        argv = shlex.split(render_defaults(task["bash_command"]))
        assert argv[0] == "ctpipe", task["bash_command"]
        assert parses_as_ctpipe(argv[1:]), f"{task_id}: `{' '.join(argv)}` is not a valid ctpipe command line"
        assert argv[argv.index("--config") + 1] == "/etc/ctpipe/ctpipe.yaml"
    assert shlex.split(render_defaults(tasks["stream_until_idle"]["bash_command"]))[1:3] == ["stream", "--until-idle"]
    assert shlex.split(render_defaults(tasks["controller"]["bash_command"]))[1:4] == ["controller", "--once", "--json"]
    # Relative on purpose: it resolves among the runner configs installed with ctpipe
    # (tests/pipeline/test_runner_config_paths.py), wherever Airflow runs the task.
    stream = shlex.split(render_defaults(tasks["stream_until_idle"]["bash_command"]))
    assert stream[stream.index("--runner-config") + 1] == "runner_configs/direct.yaml"


def test_a_dag_run_drains_kafka_and_a_rejected_candidate_skips_the_controller(tmp_path, kafka_broker, kafka_topic):
    """The whole DAG in Airflow with the real ctpipe: stream seals windows from Kafka, the
    controller's new-windows policy starts a run and its candidate is rejected (an unreachable
    example_count bound), exit 10 -> skipped."""
    from core import window_store
    from pipeline import synthetic
    from pipeline.config import config_from_dict
    from transforms.kafka.produce import produce_generated

    root = tmp_path / "store"
    data = {
        "storage": {"root": str(root)},
        "source": {"kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic,
                             "group_id": f"g-{kafka_topic}"}},
        "window": {"size": "1h", "allowed_lateness": "15m"},
        "training": {"epochs": 1},
        "gate": {"thresholds": [{"metric": "example_count", "lower_bound": 1_000_000_000}]},
        "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"},
    }
    config_path = tmp_path / "ctpipe.yaml"
    config_path.write_text(yaml.safe_dump(data))
    lines = synthetic.generate(dt.datetime(2026, 11, 27), 3, 200, seed=3)
    produce_generated(config_from_dict(data), kafka_topic, lines, None)

    # The ctpipe of this checkout (Airflow's task process has its own Python); the runner config
    # stays the DAG's relative default while Airflow runs each task in a fresh temporary directory.
    ctpipe = f"env PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)} -m pipeline.cli"
    out = run_airflow(_RUN, [DAG_DIR, DAG_ID], tmp_path,
                      variables={"ctpipe_bin": ctpipe, "ctpipe_config": str(config_path)})
    log = (tmp_path / "airflow.log").read_text()
    assert out["tasks"]["stream_until_idle"] == {"state": "success", "try_number": 1}, log[-4000:]
    assert out["tasks"]["controller"] == {"state": "skipped", "try_number": 1}, log[-4000:]
    assert out["run_state"] == "success"
    assert re.search(r"(?i)exit(ed)? (with return )?code 10", log), "the controller did not exit 10"
    state = json.loads((root / "controller" / "state.json").read_text())
    assert state["last_run"]["outcome"] == "rejected" and state["last_run"]["policies"][0]["policy"] == "new_windows"
    sealed = window_store.list_sealed(str(root))
    assert [w.window_id for w in sealed] == ["20261127T0000Z", "20261127T0100Z"]
    assert not (tmp_path / "registry" / "sensors" / "versions").exists(), "a rejected candidate was pushed"
