"""Airflow DAG: drain Kafka into sealed windows, then run the CT controller.

Every hour: `ctpipe stream --until-idle` reads each partition from its checkpoint to the end
offset it saw when it started (so it ends under steady traffic too) and seals the windows the
watermark passed (bounded micro-batches,
exactly-once through ctpipe's checkpoint protocol), then `ctpipe controller --once` makes one
check of the CT controller (docs/CONTROLLER.md): its policies (controller.policies: new PASS
windows, drift, a schedule, `ctpipe trigger` requests) decide from the windows just sealed
whether a training run starts; the run trains on the rolling range, gates and pushes; a run of
inputs already trained is a no-op. Its one-line JSON summary (the decision, which policies fired
and why, the run and the model's freshness) becomes the task's XCom (``return_value``, parsed),
for downstream tasks and the UI. Both push their metrics to the Pushgateway.

Exit codes (README, "Exit codes"): `ctpipe controller --once` exits 10 when the run it started
was rejected by the evaluation gate. That is a decision, not a failure: the task ends as *skipped* (never retried, the DAG
run still succeeds) and the production model stays where it was. Any other non-zero exit fails
the task, and Airflow retries it (`retries` below): every ctpipe command is idempotent.

Deploy by copying this file into the DAGs folder of an Airflow 3 (BashOperator from
apache-airflow-providers-standard; deploy/airflow/requirements.lock is the tested set) whose
workers have the `ctpipe` CLI installed (the ctpipe image, deploy/docker/Dockerfile). Airflow
Variables (Admin > Variables) set the paths without editing the file:
  ctpipe_bin            the ctpipe command on the workers (default `ctpipe`, found on PATH)
  ctpipe_config         path of ctpipe.yaml on the workers (default /etc/ctpipe/ctpipe.yaml)
  ctpipe_runner_config  Beam options file for the stream step (default runner_configs/direct.yaml;
                        a relative path that is not in the task's working directory, which Airflow
                        makes a fresh temporary one, resolves among the runner configs installed
                        with ctpipe)
No credentials here: Kafka and object-store secrets reach the workers as environment variables
or mounted files, which ctpipe.yaml names.
"""
import json
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

CTPIPE = "{{ var.value.get('ctpipe_bin', 'ctpipe') }}"
CONFIG = "{{ var.value.get('ctpipe_config', '/etc/ctpipe/ctpipe.yaml') }}"
RUNNER_CONFIG = "{{ var.value.get('ctpipe_runner_config', 'runner_configs/direct.yaml') }}"
EXIT_GATE_REJECTED = 10
"""`ctpipe controller --once`: the gate rejected the candidate of the run it started (core/errors.py)."""

default_args = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": True,
}

with DAG(
    dag_id="ctpipe_continuous_training",
    description="ctpipe: drain Kafka into sealed windows, then let the CT controller train, gate and push by policy",
    # Minute 20: hourly windows seal 15 minutes after their end (window.allowed_lateness).
    schedule="20 * * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    max_active_runs=1,  # a slow run delays the next one, never overlaps it
    default_args=default_args,
    tags=["ctpipe", "ml"],
) as dag:
    stream = BashOperator(
        task_id="stream_until_idle",
        bash_command=f"{CTPIPE} stream --until-idle --config {CONFIG} --runner-config {RUNNER_CONFIG}",
        execution_timeout=timedelta(minutes=30),
    )
    controller = BashOperator(
        task_id="controller",
        bash_command=f"{CTPIPE} controller --once --json --config {CONFIG}",
        execution_timeout=timedelta(minutes=50),
        skip_on_exit_code=EXIT_GATE_REJECTED,  # not blessed: skipped, not failed, not retried
        output_processor=json.loads,  # the XCom is the controller's summary, not its text
    )
    stream >> controller
