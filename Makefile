# ctpipe: the two set-up commands are `make demo` and `make test`; both work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# Two pytest-xdist workers, each running whole files (module fixtures are set up once); each worker
# starts its own local services on free ports. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= --durations=25
PYTEST_XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

AIRFLOW_VENV := .airflow-venv

# Python caches compiled modules (__pycache__) unless PYTHONDONTWRITEBYTECODE is set, and some
# machines set it (this one does). Then every process compiles TensorFlow, Beam and TFX from
# source again: ~45 s of CPU per `ctpipe` start here, in every test that starts a CLI, a worker or
# a trainer. Each module is compiled once instead (the caches are .gitignored).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: venv demo test test-fast test-kube kube lock system-deps engines engines-lock airflow airflow-lock services-up flink-up kube-up \
	services-down bench bench-all bench-flink bench-flink-stream clean

# The virtual environment, installed from the fully pinned lock (never resolves).
$(VENV)/.installed: requirements.lock setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync --python $(PY) requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

# Debian packages the tests need (promtool/prometheus, pushgateway, chromium, JDK 17, Maven,
# openssl); idempotent.
system-deps:
	bash scripts/install_system_deps.sh

# The pinned JVM engines (jvm/engines.lock: Apache Kafka, Apache Flink, Beam's Flink job server), fetched with Maven into
# CTPIPE_ENGINES_DIR (default ~/.cache/ctpipe/engines) and sha256-verified; no network when cached.
engines: system-deps
	bash scripts/fetch_engines.sh

# Regenerate jvm/engines.lock from jvm/engines.in (the only time JVM dependencies are resolved).
engines-lock:
	bash scripts/fetch_engines.sh --lock

# Airflow 3 in a virtual environment of its own (deploy/airflow/requirements.lock; its dependencies
# conflict with ctpipe's), for the tests that load deploy/airflow/ctpipe_dag.py in a real Airflow,
# plus a migrated metadata database (sqlite) they copy instead of migrating on every run.
# Rebuilt only when the lock changes.
$(AIRFLOW_VENV)/.installed: deploy/airflow/requirements.lock | $(VENV)/.installed
	test -x $(AIRFLOW_VENV)/bin/python || $(VENV)/bin/uv venv --quiet --python $(PYTHON) $(AIRFLOW_VENV)
	$(VENV)/bin/uv pip sync --quiet --python $(AIRFLOW_VENV)/bin/python deploy/airflow/requirements.lock
	rm -rf $(AIRFLOW_VENV)/db-template && mkdir -p $(AIRFLOW_VENV)/db-template
	AIRFLOW_HOME=$(CURDIR)/$(AIRFLOW_VENV)/db-template AIRFLOW__CORE__LOAD_EXAMPLES=False \
		AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$(CURDIR)/$(AIRFLOW_VENV)/db-template/airflow.db \
		$(AIRFLOW_VENV)/bin/airflow db migrate > $(AIRFLOW_VENV)/db-template/migrate.log 2>&1 \
		|| { tail -20 $(AIRFLOW_VENV)/db-template/migrate.log; exit 1; }
	touch $@

airflow: $(AIRFLOW_VENV)/.installed

# Regenerate deploy/airflow/requirements.lock from requirements.in.
airflow-lock: venv
	$(VENV)/bin/uv pip compile deploy/airflow/requirements.in --python-version 3.11 \
		--python-platform x86_64-manylinux_2_36 -o deploy/airflow/requirements.lock

demo: venv
	$(VENV)/bin/ctpipe demo --workdir ./demo-work

# The whole suite. Tests start the local services they need (Apache Kafka from the pinned engines,
# S3 server, MLflow, Prometheus) on loopback ports and stop them afterwards.
test: venv system-deps engines airflow
	$(PY) -m pytest tests $(PYTEST_XDIST) -m "not kube" $(PYTEST_ARGS)

# A real kube-apiserver and etcd (k8s.io/kubernetes v1.36.3, pinned by kube/go.mod and kube/go.sum),
# built from the Go module proxy into CTPIPE_KUBE_DIR (default ~/.cache/ctpipe/kube). A cold build
# took 40 min on a busy 2-core machine (2,370 CPU-seconds, 2.2 GB peak memory); cached: no compiler,
# no network.
kube:
	bash scripts/fetch_kube.sh

# The tests of the Kubernetes leader Lease and the server-side dry run of deploy/k8s, against that
# API server (`make test` leaves them out because of the cold build).
test-kube: venv kube
	$(PY) -m pytest tests -m kube $(PYTEST_ARGS)

# Unit tests only: no `slow` pipelines, no `integration` services (so no Java, no broker).
test-fast: venv
	$(PY) -m pytest tests -m "not slow and not integration" $(PYTEST_XDIST) $(PYTEST_ARGS)

# Regenerate the lock from requirements.in (the only time anything is resolved).
lock:
	$(PYTHON) -m pip install --quiet uv==$(UV_VERSION)
	$(PYTHON) -m uv pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
		-o requirements.lock

# Apache Kafka (PLAINTEXT + SASL_SSL/SCRAM) and an S3 server on loopback; `bash scripts/services.sh env`
# prints their addresses.
services-up: venv engines
	bash scripts/services.sh start kafka
	bash scripts/services.sh start s3

# A local Apache Flink 1.19 session cluster and Beam's Flink job server on loopback; then
# `eval "$$(bash scripts/services.sh env)"` and `ctpipe backfill --runner-config runner_configs/flink-local.yaml`.
flink-up: venv engines
	bash scripts/services.sh start flink
	bash scripts/services.sh start beam-job-server
	bash scripts/services.sh start beam-expansion

# etcd + kube-apiserver on loopback (RBAC on; `bash scripts/services.sh env` prints the server, CA and
# admin token file).
kube-up: kube venv
	bash scripts/services.sh start kube

services-down:
	bash scripts/services.sh stop all

bench: venv
	$(PY) bench/bench_backfill.py --rows 200000

# The whole table (docs/BENCHMARKS.md, between the bench-all markers): backfill at 200k/1M/5M rows vs
# the peers with peak RSS, the Kafka stream vs raw consumption, event -> sealed and sealed -> pushed
# latencies; raw figures in bench/results/. Tens of minutes at these sizes: override with e.g.
# make bench-all BENCH_ALL_ARGS="--sizes 20000,100000 --stream-n 20000"
BENCH_ALL_ARGS ?=
bench-all: venv engines
	$(PY) bench/run_all.py $(BENCH_ALL_ARGS)

# Backfill on the local Flink cluster vs DirectRunner, same input (starts and stops its own cluster).
bench-flink: venv engines
	$(PY) bench/bench_flink.py --rows-per-hour 10000 --hours 2 --worker-pool

# The unbounded stream on the local Flink cluster vs raw kafka-python consumption of the same topic
# (starts and stops its own broker and cluster; LOOPBACK, then an EXTERNAL Beam worker pool).
bench-flink-stream: venv engines
	$(PY) bench/bench_flink_stream.py --n 20000 --worker-pool

clean:
	rm -rf demo-work .pytest_cache .services
