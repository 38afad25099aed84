# ctpipe: the two set-up commands are `make demo` and `make test`; both work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
PYTEST_ARGS ?=

.PHONY: venv demo test test-fast lock system-deps services-up services-down bench clean

# The virtual environment, installed from the fully pinned lock (never resolves).
$(VENV)/.installed: requirements.lock setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip sync --python $(PY) requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

# Debian packages the tests need (promtool/prometheus, pushgateway, chromium); idempotent.
system-deps:
	bash scripts/install_system_deps.sh

demo: venv
	$(VENV)/bin/ctpipe demo --workdir ./demo-work

# The whole suite. Tests start the local services they need (Kafka-compatible broker, S3 server,
# MLflow, Prometheus) on loopback ports and stop them afterwards.
test: venv system-deps
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest tests -m "not slow and not integration" $(PYTEST_ARGS)

# Regenerate the lock from requirements.in (the only time anything is resolved).
lock:
	$(PYTHON) -m pip install --quiet uv==$(UV_VERSION)
	$(PYTHON) -m uv pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
		-o requirements.lock

services-up: venv
	bash scripts/services.sh start broker
	bash scripts/services.sh start s3

services-down:
	bash scripts/services.sh stop all

bench: venv
	$(PY) bench/bench_backfill.py --rows 200000

clean:
	rm -rf demo-work .pytest_cache .services
