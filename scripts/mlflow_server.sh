#!/usr/bin/env bash
# Starts or stops a local MLflow tracking server + Model Registry for ctpipe.
#
#   scripts/mlflow_server.sh start   # prints the env file; idempotent while it runs
#   scripts/mlflow_server.sh stop
#   scripts/mlflow_server.sh status
#
# The server listens on a free 127.0.0.1 port, keeps runs and registered models in a sqlite
# database and serves artifacts (proxied, so clients need no access to the artifact dir) from a
# local directory, all under $CTPIPE_SERVICES_DIR (default: <repo>/.services):
#   mlflow/mlflow.db      backend + registry store
#   mlflow/artifacts/     artifact root
#   mlflow.pid mlflow.log
#   mlflow.env            CTPIPE_MLFLOW_URI=http://127.0.0.1:<port> (source it, or pass
#                         mlflow+$CTPIPE_MLFLOW_URI to training.registry.open_registry)
#
# Environment: CTPIPE_SERVICES_DIR, MLFLOW_BIN (default: mlflow next to the python running
# ctpipe, i.e. the virtualenv's, then PATH), CTPIPE_MLFLOW_START_TIMEOUT_S (default 180: the
# first start migrates the database, which takes tens of seconds on small machines).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${CTPIPE_SERVICES_DIR:-$ROOT/.services}"
PID_FILE="$DIR/mlflow.pid"
LOG_FILE="$DIR/mlflow.log"
ENV_FILE="$DIR/mlflow.env"
TIMEOUT_S="${CTPIPE_MLFLOW_START_TIMEOUT_S:-180}"

die() { echo "mlflow_server.sh: $*" >&2; exit 1; }

mlflow_bin() {
  if [[ -n "${MLFLOW_BIN:-}" ]]; then echo "$MLFLOW_BIN"; return; fi
  if [[ -x "$ROOT/.venv/bin/mlflow" ]]; then echo "$ROOT/.venv/bin/mlflow"; return; fi
  command -v mlflow || die "no mlflow executable: set MLFLOW_BIN or activate the virtualenv"
}

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  if running; then cat "$ENV_FILE"; return 0; fi
  mkdir -p "$DIR/mlflow/artifacts"
  local bin port uri deadline
  bin="$(mlflow_bin)"
  port="$(free_port)"
  uri="http://127.0.0.1:$port"
  rm -f "$ENV_FILE"
  # setsid: the server gets its own process group, so stop can end its workers too.
  # Server-side job execution (GenAI evaluation jobs: a job runner plus six huey consumer
  # processes) is off: the model registry needs none of it and it doubles the boot time.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
  setsid "$bin" server --host 127.0.0.1 --port "$port" --workers 1 \
    --backend-store-uri "sqlite:///$DIR/mlflow/mlflow.db" \
    --artifacts-destination "$DIR/mlflow/artifacts" >"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  deadline=$((SECONDS + TIMEOUT_S))
  until curl -sf -o /dev/null "$uri/health"; do
    if ! running; then
      tail -n 30 "$LOG_FILE" >&2
      rm -f "$PID_FILE"
      die "mlflow server exited during startup; its log is $LOG_FILE"
    fi
    if (( SECONDS >= deadline )); then
      stop >/dev/null
      die "mlflow server not ready at $uri/health after ${TIMEOUT_S}s (raise CTPIPE_MLFLOW_START_TIMEOUT_S); log: $LOG_FILE"
    fi
    sleep 0.5
  done
  printf 'CTPIPE_MLFLOW_URI=%s\n' "$uri" >"$ENV_FILE"
  cat "$ENV_FILE"
}

stop() {
  if ! [[ -f "$PID_FILE" ]]; then echo "mlflow server not running"; return 0; fi
  local pid deadline
  pid="$(cat "$PID_FILE")"
  kill -TERM -- "-$pid" 2>/dev/null || true
  deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PID_FILE" "$ENV_FILE"
  echo "mlflow server stopped"
}

status() {
  if running; then cat "$ENV_FILE" 2>/dev/null || echo "starting (pid $(cat "$PID_FILE"))"
  else echo "mlflow server not running"; return 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
