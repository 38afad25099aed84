"""Airflow DAG: drain Kafka into sealed windows, then run the CT controller.

Every hour: `ctpipe stream --until-idle` reads each partition from its checkpoint to the end
offset it saw when it started (so it ends under steady traffic too) and seals the windows the
watermark passed (bounded micro-batches,
exactly-once through ctpipe's checkpoint protocol), then `ctpipe train` runs policy, training,
the evaluation gate and the push. Both push their metrics to the Pushgateway.

Deploy by copying this file into the DAGs folder of an Airflow (2.4+) whose workers have the
`ctpipe` CLI installed (the ctpipe image, deploy/docker/Dockerfile). Airflow Variables
(Admin > Variables) set the paths without editing the file:
  ctpipe_config         path of ctpipe.yaml on the workers (default /etc/ctpipe/ctpipe.yaml)
  ctpipe_runner_config  Beam options file for the stream step (default runner_configs/direct.yaml)
No credentials here: Kafka and object-store secrets reach the workers as environment variables
or mounted files, which ctpipe.yaml names.
"""
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

CONFIG = "{{ var.value.get('ctpipe_config', '/etc/ctpipe/ctpipe.yaml') }}"
RUNNER_CONFIG = "{{ var.value.get('ctpipe_runner_config', 'runner_configs/direct.yaml') }}"

default_args = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": True,
}

with DAG(
    dag_id="ctpipe_continuous_training",
    description="ctpipe: drain Kafka into sealed windows, then train, gate and push",
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
        bash_command=f"ctpipe stream --until-idle --config {CONFIG} --runner-config {RUNNER_CONFIG}",
        execution_timeout=timedelta(minutes=30),
    )
    train = BashOperator(
        task_id="train",
        bash_command=f"ctpipe train --config {CONFIG}",
        execution_timeout=timedelta(minutes=50),
    )
    stream >> train
