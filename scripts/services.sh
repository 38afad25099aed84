#!/usr/bin/env bash
# Local loopback services for development, tests, demos and benchmarks: Apache Kafka (a real
# single-node KRaft broker, from the pinned jars of jvm/engines.lock), an S3 server (moto), and
# Apache Flink (a 1.19 session cluster plus Beam's Flink job server, pinned jars too).
# Every service listens on free 127.0.0.1 ports.
#
#   scripts/services.sh start kafka      # "broker" is the same service: start broker == start kafka
#   scripts/services.sh start s3
#   scripts/services.sh start flink      # JobManager + two TaskManagers, each its own JVM
#   scripts/services.sh start beam-job-server   # needs the running flink; submits to it
#   scripts/services.sh start beam-expansion    # Beam's Java expansion service for KafkaIO (ctpipe stream --unbounded)
#   scripts/services.sh start kube       # etcd + kube-apiserver (built by scripts/fetch_kube.sh), RBAC on
#   scripts/services.sh stop kafka|broker|s3|flink|beam-job-server|beam-expansion|kube|all
#                                                # stop flink stops the job server and the expansion service too
#   scripts/services.sh env              # eval "$(scripts/services.sh env)"
#
# State lives in $CTPIPE_SERVICES_DIR (default <repo>/.services/): NAME.pid, NAME.log and NAME.env.
# kafka.env: CTPIPE_KAFKA_BOOTSTRAP (PLAINTEXT listener), CTPIPE_KAFKA_SASL_SSL_BOOTSTRAP (SASL_SSL
# listener, SCRAM-SHA-512), CTPIPE_KAFKA_SASL_MECHANISM, CTPIPE_KAFKA_CA_FILE (the throw-away CA that
# signed the broker certificate for localhost/127.0.0.1), CTPIPE_KAFKA_USER (the SCRAM user) and
# CTPIPE_KAFKA_PASSWORD_FILE (its password, mode 0600; the password itself is in no .env file and
# never printed: point source.kafka.sasl_password_file at that file, or export it into the variable
# named by source.kafka.sasl_password_env). s3.env: CTPIPE_S3_ENDPOINT plus the moto server's test credentials.
#
# kafka/ under the state dir holds the broker's data (log.dirs), configuration, ports and TLS files:
# `stop kafka` then `start kafka` restarts on the same ports with the same data and credentials;
# delete $CTPIPE_SERVICES_DIR/kafka to start empty.
# flink.env: CTPIPE_FLINK_MASTER (the JobManager's REST host:port, Beam's flink_master),
# CTPIPE_FLINK_REST_URL, CTPIPE_FLINK_CHECKPOINT_DIR (state.checkpoints.dir, under flink/ in the
# state dir, with flink/conf/flink-conf.yaml) and CTPIPE_FLINK_TASKMANAGER_PID_FILES (comma-separated;
# flink-taskmanager-N.pid). beam-job-server.env: CTPIPE_BEAM_JOB_ENDPOINT (the portable Job API that
# runner_configs/flink-local.yaml submits to), CTPIPE_BEAM_ARTIFACT_ENDPOINT, CTPIPE_BEAM_EXPANSION_ENDPOINT.
# beam-expansion.env: CTPIPE_BEAM_KAFKA_EXPANSION_ENDPOINT (source.kafka.expansion_service of the unbounded graph).
# kube.env: CTPIPE_KUBE_API_SERVER (https://127.0.0.1:PORT), CTPIPE_KUBE_CA_FILE (the throw-away CA of
# its serving certificate) and CTPIPE_KUBE_ADMIN_TOKEN_FILE (a static system:masters token, 0600, made
# at start, in no .env file); kube/ under the state dir is a new, empty cluster at every start.
# Logs: flink-jobmanager.log, flink-taskmanager-N.log (+ .out), beam-job-server.log.
# Settings: $PYTHON (default <repo>/.venv/bin/python, the venv holding kafka-python and moto),
# $CTPIPE_SERVICES_TIMEOUT (readiness timeout, seconds, default 20; Kafka's default 90),
# $CTPIPE_KAFKA_JVM_OPTS (the broker JVM's heap and JIT options, default
# "-Xms256m -Xmx512m -XX:TieredStopAtLevel=1": C1 only starts the broker about twice as fast on two
# cores), $CTPIPE_S3_PORT (fixed port),
# $CTPIPE_ENGINES_DIR / $CTPIPE_MAVEN_REPO (see scripts/fetch_engines.sh),
# $CTPIPE_FLINK_JM_JVM_OPTS, $CTPIPE_FLINK_TM_JVM_OPTS, $CTPIPE_BEAM_JOB_SERVER_JVM_OPTS, $CTPIPE_BEAM_EXPANSION_JVM_OPTS (heap options of
# the Flink JVMs; defaults: -Xmx512m, -Xmx384m + 192m direct, -Xmx512m, -Xmx384m),
# $CTPIPE_SERVICES_OWNER_PID (stop the broker, the Flink JVMs and the job server once that process
# is gone; the test fixtures set it).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${CTPIPE_SERVICES_DIR:-$REPO/.services}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
TIMEOUT="${CTPIPE_SERVICES_TIMEOUT:-20}"
KAFKA_TIMEOUT="${CTPIPE_SERVICES_TIMEOUT:-90}"
KUBE_TIMEOUT="${CTPIPE_SERVICES_TIMEOUT:-60}"
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
  if [[ -n "$pid" ]] && alive "$pid"; then echo "$pid"; fi
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

# ---------------------------------------------------------------------------------------------
# Apache Kafka: one KRaft node (broker + controller) on three loopback ports.

KAFKA_USER=ctpipe-test  # the SCRAM user the state dir's broker is formatted with

alive() {  # alive PID: running and not a zombie
  local state
  state="$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

port_in_use() {
  "$PYTHON" -c 'import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5).close()
except OSError:
    sys.exit(1)' "$1"
}

# kafka_tls KDIR: a throw-away CA and a broker certificate for localhost and 127.0.0.1 (PKCS12
# keystore); made once per state dir. The CA's key is deleted once it has signed.
kafka_tls() {
  local tls="$1/tls"
  [[ -f "$tls/broker.p12" ]] && return 0
  command -v openssl >/dev/null || die "openssl not found (Debian: apt-get install openssl)"
  command -v keytool >/dev/null || die "keytool not found; install a JDK 17 (Debian: openjdk-17-jdk-headless)"
  rm -rf "$tls"; mkdir -p "$tls"
  ( umask 077
    cd "$tls"
    openssl rand -hex 24 >keystore-password
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -keyout ca.key -out ca.pem -subj "/CN=ctpipe throw-away test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout broker.key -out broker.csr -subj "/CN=localhost"
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile broker.ext -out broker.pem
    openssl pkcs12 -export -name broker -in broker.pem -inkey broker.key -certfile ca.pem \
      -passout file:keystore-password -out broker.p12.tmp
    # Java must read the keystore; keytool says why when it cannot.
    keytool -list -storetype PKCS12 -keystore broker.p12.tmp -storepass:file keystore-password >/dev/null
    rm -f ca.key ca.srl broker.csr broker.ext broker.key
    mv broker.p12.tmp broker.p12
    chmod 0644 ca.pem
  ) >>"$1/setup.log" 2>&1 || { tail -n 20 "$1/setup.log" >&2; die "making the Kafka TLS files in $tls failed; see $1/setup.log"; }
}

# kafka_config KDIR PLAIN SASL CONTROLLER: server.properties (mode 0600: it holds the keystore password).
kafka_config() {
  local kdir="$1" plain="$2" sasl="$3" ctl="$4"
  ( umask 077
    cat >"$kdir/server.properties.tmp" <<EOF
# Written by scripts/services.sh for a local single-node KRaft broker; do not commit.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$ctl
listeners=PLAINTEXT://$HOST:$plain,SASL_SSL://$HOST:$sasl,CONTROLLER://$HOST:$ctl
advertised.listeners=PLAINTEXT://$HOST:$plain,SASL_SSL://$HOST:$sasl
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$kdir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# SASL_SSL: SCRAM-SHA-512 users from the metadata log; TLS with the state dir's PKCS12 keystore.
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$kdir/tls/broker.p12
ssl.keystore.password=$(cat "$kdir/tls/keystore-password")
ssl.client.auth=none
EOF
    mv "$kdir/server.properties.tmp" "$kdir/server.properties" )
}

KAFKA_JVM_OPTS=(-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
                "-Dlog4j2.configurationFile=$REPO/jvm/kafka/log4j2.properties")

kafka_java() {  # kafka_java HEAP MAIN ARGS...: a JVM on the pinned Kafka classpath
  local heap="$1"; shift
  # shellcheck disable=SC2086  # heap options are several words
  java $heap -XX:TieredStopAtLevel=1 "${KAFKA_JVM_OPTS[@]}" -cp "$KAFKA_CP" "$@"
}

# kafka_format KDIR: format the data dir once (KRaft, standalone controller, the SCRAM user). The
# password goes to the StorageTool salted (PBKDF2), so the cleartext never reaches a command line.
kafka_format() {
  local kdir="$1"
  [[ -f "$kdir/data/meta.properties" ]] && return 0
  ( umask 077; [[ -s "$kdir/scram-password" ]] || openssl rand -hex 24 | tr -d '\n' >"$kdir/scram-password" )
  local scram cluster
  scram="$("$PYTHON" - "$KAFKA_USER" "$kdir/scram-password" <<'EOF'
import base64, hashlib, os, sys
user, path = sys.argv[1], sys.argv[2]
password = open(path, encoding="utf-8").read().strip().encode()
salt, iterations = os.urandom(24), 8192
salted = hashlib.pbkdf2_hmac("sha512", password, salt, iterations)
b64 = lambda b: base64.b64encode(b).decode()
print(f'SCRAM-SHA-512=[name={user},iterations={iterations},salt="{b64(salt)}",saltedpassword="{b64(salted)}"]')
EOF
)" || die "cannot compute the SCRAM credential with $PYTHON"
  cluster="$(kafka_java "-Xmx128m" kafka.tools.StorageTool random-uuid 2>>"$kdir/setup.log" | tail -n 1)" \
    || die "kafka.tools.StorageTool random-uuid failed; see $kdir/setup.log"
  [[ "$cluster" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "kafka.tools.StorageTool random-uuid printed '$cluster', not a cluster id"
  rm -rf "$kdir/data"
  if ! kafka_java "-Xmx256m" kafka.tools.StorageTool format --standalone --cluster-id "$cluster" \
       --config "$kdir/server.properties" --add-scram "$scram" >>"$kdir/setup.log" 2>&1; then
    tail -n 20 "$kdir/setup.log" >&2
    die "formatting the Kafka data dir $kdir/data failed; see $kdir/setup.log"
  fi
  echo "$cluster" >"$kdir/cluster-id"
}

# kafka_wait PID PLAIN SASL KDIR: poll until both listeners answer a real request (metadata over
# PLAINTEXT, then a SCRAM-SHA-512 login and metadata over SASL_SSL), the process exits, or the
# deadline passes.
kafka_wait() {
  "$PYTHON" - "$@" "$KAFKA_USER" "$KAFKA_TIMEOUT" <<'EOF'
import logging, os, socket, sys, time
pid, plain, sasl, kdir, user, timeout = sys.argv[1:]
logging.disable(logging.CRITICAL)
from kafka import KafkaAdminClient

def alive():
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

password = open(os.path.join(kdir, "scram-password"), encoding="utf-8").read().strip()
listeners = [("PLAINTEXT", {"bootstrap_servers": f"127.0.0.1:{plain}"}),
             ("SASL_SSL", {"bootstrap_servers": f"127.0.0.1:{sasl}", "security_protocol": "SASL_SSL",
                           "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": user,
                           "sasl_plain_password": password, "ssl_cafile": os.path.join(kdir, "tls", "ca.pem")})]
deadline = time.monotonic() + float(timeout)
last = "no answer yet"
for name, kwargs in listeners:
    while True:
        if not alive():
            sys.exit(f"the broker process exited before its {name} listener answered")
        if time.monotonic() > deadline:
            sys.exit(f"the {name} listener did not answer within {float(timeout):g} s ({last})")
        port = int(kwargs["bootstrap_servers"].rsplit(":", 1)[1])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError as exc:
            last = f"port {port}: {exc.strerror or exc}"
            time.sleep(0.1)
            continue
        try:
            admin = KafkaAdminClient(**kwargs, request_timeout_ms=5000, bootstrap_timeout_ms=5000)
            try:
                if admin.describe_cluster().get("brokers"):
                    break
                last = "no broker registered yet"
            finally:
                admin.close()
        except Exception as exc:  # not ready yet: keep polling until the deadline
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
EOF
}

# watch_owner OWNER PID: a detached watcher that stops PID (SIGTERM, SIGKILL after 30 s) once the
# process OWNER is gone, so a test run killed before its teardown leaves no broker behind. It
# checks every 2 s and exits with PID.
watch_owner() {
  local owner="$1" pid="$2"
  setsid bash -c '
    alive() { local s; s="$(awk "{ print \$3 }" "/proc/$1/stat" 2>/dev/null)" && [[ -n "$s" && "$s" != Z ]]; }
    while alive "$2"; do
      if ! alive "$1"; then
        kill -TERM "$2" 2>/dev/null
        for ((i = 0; i < 300; i++)); do alive "$2" || exit 0; sleep 0.1; done
        kill -KILL "$2" 2>/dev/null
        exit 0
      fi
      sleep 2
    done' _ "$owner" "$pid" </dev/null >/dev/null 2>&1 &
}

start_kafka() {
  need_python
  local pid; pid="$(pid_of kafka)"
  if [[ -n "$pid" ]]; then echo "kafka already running (pid $pid)"; return 0; fi
  command -v java >/dev/null || die "java not found; install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
  KAFKA_CP="$(bash "$REPO/scripts/fetch_engines.sh" --classpath kafka)" \
    || die "cannot fetch the pinned Kafka jars (scripts/fetch_engines.sh kafka failed; see above)"
  local kdir="$DIR/kafka" plain sasl ctl
  mkdir -p "$kdir"
  if [[ -s "$kdir/ports" ]]; then  # a restart: the same ports, data and credentials
    read -r plain sasl ctl <"$kdir/ports"
  else
    plain="$(free_port)"; sasl="$(free_port)"; ctl="$(free_port)"
    while [[ "$sasl" == "$plain" ]]; do sasl="$(free_port)"; done
    while [[ "$ctl" == "$plain" || "$ctl" == "$sasl" ]]; do ctl="$(free_port)"; done
  fi
  local p
  for p in "$plain" "$sasl" "$ctl"; do
    port_in_use "$p" && die "port $p (kept in $kdir/ports) is in use; stop what listens there, or delete $kdir to start a new broker"
  done
  kafka_tls "$kdir"
  kafka_config "$kdir" "$plain" "$sasl" "$ctl"
  kafka_format "$kdir"
  echo "$plain $sasl $ctl" >"$kdir/ports"
  rm -f "$DIR/kafka.env"
  local started=$SECONDS
  # shellcheck disable=SC2086  # heap options are several words
  setsid java ${CTPIPE_KAFKA_JVM_OPTS:--Xms256m -Xmx512m -XX:TieredStopAtLevel=1} "${KAFKA_JVM_OPTS[@]}" -cp "$KAFKA_CP" \
    kafka.Kafka "$kdir/server.properties" >>"$DIR/kafka.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$DIR/kafka.pid"
  [[ -n "${CTPIPE_SERVICES_OWNER_PID:-}" ]] && watch_owner "$CTPIPE_SERVICES_OWNER_PID" "$pid"
  local why
  if ! why="$(kafka_wait "$pid" "$plain" "$sasl" "$kdir" 2>&1)"; then
    echo "---- tail of $DIR/kafka.log" >&2
    tail -n 30 "$DIR/kafka.log" >&2 || true
    stop_service kafka >/dev/null
    die "kafka did not become ready: ${why##*$'\n'}"
  fi
  chmod 0600 "$kdir/scram-password"
  cat >"$DIR/kafka.env" <<EOF
CTPIPE_KAFKA_BOOTSTRAP=$HOST:$plain
CTPIPE_KAFKA_SASL_SSL_BOOTSTRAP=$HOST:$sasl
CTPIPE_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
CTPIPE_KAFKA_CA_FILE=$kdir/tls/ca.pem
CTPIPE_KAFKA_USER=$KAFKA_USER
CTPIPE_KAFKA_PASSWORD_FILE=$kdir/scram-password
CTPIPE_KAFKA_DATA_DIR=$kdir/data
EOF
  echo "kafka started (pid $pid) in $((SECONDS - started)) s: PLAINTEXT $HOST:$plain, SASL_SSL $HOST:$sasl; log $DIR/kafka.log"
}

# ---------------------------------------------------------------------------------------------
# Apache Flink 1.19: a session cluster (a JobManager and two TaskManagers, each its own JVM,
# started directly without Flink's launch scripts) and Beam's Flink job server pointed at it.

FLINK_TASKMANAGERS=2
# JDK 17 needs these for Flink's (and Beam's) reflection on JDK internals: Flink's own default
# env.java.opts.all list.
FLINK_JDK17_OPTS=(-XX:+IgnoreUnrecognizedVMOptions
  --add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED)

# flink_config FDIR REST RPC BLOB: conf/flink-conf.yaml for a loopback session cluster. Every
# TaskManager memory component is set explicitly (the TaskManager refuses to start otherwise when
# it is not launched by Flink's scripts); the sizes keep each TaskManager JVM under ~1 GB.
flink_config() {
  local fdir="$1" rest="$2" rpc="$3" blob="$4"
  mkdir -p "$fdir/conf" "$fdir/checkpoints" "$fdir/savepoints" "$fdir/tmp"
  cp "$REPO/jvm/flink/log4j2.properties" "$fdir/conf/log4j2.properties"
  cat >"$fdir/conf/flink-conf.yaml.tmp" <<EOF
# Written by scripts/services.sh for a local Flink session cluster; do not commit.
jobmanager.rpc.address: $HOST
jobmanager.rpc.port: $rpc
jobmanager.bind-host: $HOST
rest.address: $HOST
rest.bind-address: $HOST
rest.port: $rest
blob.server.port: $blob
taskmanager.host: $HOST
taskmanager.bind-host: $HOST
taskmanager.numberOfTaskSlots: 2
parallelism.default: 2
taskmanager.cpu.cores: 2
taskmanager.memory.framework.heap.size: 128m
taskmanager.memory.task.heap.size: 256m
taskmanager.memory.framework.off-heap.size: 128m
taskmanager.memory.task.off-heap.size: 0m
taskmanager.memory.network.min: 64m
taskmanager.memory.network.max: 64m
# Beam batch jobs deploy many operators at once, each blocking result partition sort-shuffled:
# 8 KiB buffers (8192 in the same 64 MiB) and 64 (not 512) buffers per partition fit them.
taskmanager.memory.segment-size: 8kb
taskmanager.network.sort-shuffle.min-buffers: 64
taskmanager.memory.managed.size: 128m
taskmanager.memory.jvm-metaspace.size: 256m
taskmanager.memory.jvm-overhead.min: 192m
taskmanager.memory.jvm-overhead.max: 192m
jobmanager.memory.process.size: 900m
# A killed TaskManager is noticed by failed heartbeat RPCs (heartbeat.rpc-failure-threshold, 2 by
# default) within seconds; the timeout itself is long because the machines are shared and busy.
heartbeat.interval: 1000
heartbeat.timeout: 30000
state.backend.type: hashmap
state.checkpoints.dir: file://$fdir/checkpoints
state.savepoints.dir: file://$fdir/savepoints
execution.checkpointing.externalized-checkpoint-retention: RETAIN_ON_CANCELLATION
restart-strategy.type: fixed-delay
restart-strategy.fixed-delay.attempts: 10
restart-strategy.fixed-delay.delay: 1 s
io.tmp.dirs: $fdir/tmp
web.submit.enable: true
classloader.check-leaked-classloader: false
EOF
  mv "$fdir/conf/flink-conf.yaml.tmp" "$fdir/conf/flink-conf.yaml"
}

flink_java() {  # flink_java NAME HEAP... -- MAIN ARGS...: a detached Flink JVM; prints its pid
  local name="$1"; shift
  local -a heap=()
  while [[ "$1" != -- ]]; do heap+=("$1"); shift; done
  shift
  setsid java "${heap[@]}" -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    "${FLINK_JDK17_OPTS[@]}" "-Dlog.file=$DIR/$name.log" \
    "-Dlog4j.configurationFile=$FLINK_DIR/conf/log4j2.properties" -cp "$FLINK_CP" "$@" \
    >>"$DIR/$name.out" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$DIR/$name.pid"
  [[ -n "${CTPIPE_SERVICES_OWNER_PID:-}" ]] && watch_owner "$CTPIPE_SERVICES_OWNER_PID" "$pid"
  echo "$pid"
}

# flink_wait REST TASKMANAGERS PIDS...: poll the REST API until TASKMANAGERS TaskManagers are
# registered with the free slots they offer; fail when one of the JVMs exits or at the deadline.
flink_wait() {
  "$PYTHON" - "$KAFKA_TIMEOUT" "$@" <<'EOF'
import json, sys, time, urllib.request
timeout, rest, want, pids = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

deadline = time.monotonic() + timeout
last = "no answer yet"
while time.monotonic() < deadline:
    dead = [p for p in pids if not alive(p)]
    if dead:
        sys.exit(f"Flink JVM (pid {dead[0]}) exited before the cluster was ready")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest}/taskmanagers", timeout=2) as resp:
            tms = json.load(resp).get("taskmanagers", [])
        if len(tms) >= want:
            sys.exit(0)
        last = f"{len(tms)} of {want} TaskManagers registered"
    except OSError as exc:
        last = f"REST port {rest}: {exc}"
    time.sleep(0.2)
sys.exit(f"the cluster was not ready within {timeout:g} s ({last})")
EOF
}

start_flink() {
  need_python
  local pid; pid="$(pid_of flink-jobmanager)"
  if [[ -n "$pid" ]]; then echo "flink already running (JobManager pid $pid)"; return 0; fi
  command -v java >/dev/null || die "java not found; install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
  FLINK_CP="$(bash "$REPO/scripts/fetch_engines.sh" --classpath flink)" \
    || die "cannot fetch the pinned Flink jars (scripts/fetch_engines.sh flink failed; see above)"
  FLINK_DIR="$DIR/flink"
  local rest rpc blob
  mkdir -p "$FLINK_DIR"
  if [[ -s "$FLINK_DIR/ports" ]]; then  # a restart: the same ports and checkpoint dir
    read -r rest rpc blob <"$FLINK_DIR/ports"
  else
    rest="$(free_port)"; rpc="$(free_port)"; blob="$(free_port)"
    while [[ "$rpc" == "$rest" ]]; do rpc="$(free_port)"; done
    while [[ "$blob" == "$rest" || "$blob" == "$rpc" ]]; do blob="$(free_port)"; done
  fi
  local p
  for p in "$rest" "$rpc" "$blob"; do
    port_in_use "$p" && die "port $p (kept in $FLINK_DIR/ports) is in use; stop what listens there, or delete $FLINK_DIR"
  done
  flink_config "$FLINK_DIR" "$rest" "$rpc" "$blob"
  echo "$rest $rpc $blob" >"$FLINK_DIR/ports"
  rm -f "$DIR/flink.env"
  local started=$SECONDS i
  local -a pids=()
  # shellcheck disable=SC2086  # heap options are several words
  pids+=("$(flink_java flink-jobmanager ${CTPIPE_FLINK_JM_JVM_OPTS:--Xmx512m -Xms256m -XX:MaxMetaspaceSize=256m} -- \
    org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint --configDir "$FLINK_DIR/conf")")
  for ((i = 1; i <= FLINK_TASKMANAGERS; i++)); do
    # shellcheck disable=SC2086
    pids+=("$(flink_java "flink-taskmanager-$i" \
      ${CTPIPE_FLINK_TM_JVM_OPTS:--Xmx384m -Xms384m -XX:MaxDirectMemorySize=192m -XX:MaxMetaspaceSize=256m} -- \
      org.apache.flink.runtime.taskexecutor.TaskManagerRunner --configDir "$FLINK_DIR/conf" \
      -D "taskmanager.resource-id=taskmanager-$i")")
  done
  local why
  if ! why="$(flink_wait "$rest" "$FLINK_TASKMANAGERS" "${pids[@]}" 2>&1)"; then
    local n
    for n in flink-jobmanager $(seq -f 'flink-taskmanager-%g' 1 "$FLINK_TASKMANAGERS"); do
      echo "---- tail of $DIR/$n.log" >&2; tail -n 15 "$DIR/$n.log" "$DIR/$n.out" >&2 2>/dev/null || true
    done
    stop_flink >/dev/null
    die "flink did not become ready: ${why##*$'\n'}"
  fi
  cat >"$DIR/flink.env" <<EOF
CTPIPE_FLINK_MASTER=$HOST:$rest
CTPIPE_FLINK_REST_URL=http://$HOST:$rest
CTPIPE_FLINK_CHECKPOINT_DIR=$FLINK_DIR/checkpoints
CTPIPE_FLINK_TASKMANAGER_PID_FILES=$(seq -f "$DIR/flink-taskmanager-%g.pid" -s , 1 "$FLINK_TASKMANAGERS")
EOF
  echo "flink started in $((SECONDS - started)) s: JobManager pid ${pids[0]}, TaskManagers ${pids[*]:1}; REST http://$HOST:$rest; logs $DIR/flink-*.log"
}

stop_flink() {
  local i
  stop_service beam-job-server >/dev/null  # it submits to this cluster: useless without it
  stop_service beam-expansion >/dev/null
  for ((i = 1; i <= FLINK_TASKMANAGERS; i++)); do stop_service "flink-taskmanager-$i"; done
  stop_service flink-jobmanager
  rm -f "$DIR/flink.env"
}

# beam_classpath: the job server's jars, then Beam's Java KafkaIO (jvm/engines.in, beam-kafka-io): the
# job server's own versions come first; the job server stages the whole classpath to the TaskManagers
# with each job, so KafkaIO's Java code is there when the unbounded graph reads Kafka inside Flink.
beam_classpath() {
  local js kio
  js="$(bash "$REPO/scripts/fetch_engines.sh" --classpath beam-flink-job-server)" \
    || die "cannot fetch the pinned Beam job server jars (scripts/fetch_engines.sh beam-flink-job-server failed)"
  kio="$(bash "$REPO/scripts/fetch_engines.sh" --classpath beam-kafka-io)" \
    || die "cannot fetch the pinned Beam KafkaIO jars (scripts/fetch_engines.sh beam-kafka-io failed)"
  # KafkaIO's dependencies repeat 40 of the job server's jars (the same file names, ~55 MB): list each
  # jar once, since the whole classpath travels with every job.
  echo "$js:$kio" | tr ':' '\n' | awk -F/ '!seen[$NF]++' | paste -sd:
}

# Beam's Java expansion service for the unbounded graph's Kafka read (Python's ReadFromKafka is a
# cross-language transform): --defaultEnvironmentType=EMBEDDED runs KafkaIO's Java DoFns inside the
# TaskManager JVMs (no Docker), and --experiments=use_deprecated_read expands the read to the
# UnboundedSource that Flink runs natively (its reader state is Flink checkpoint state; offsets are
# committed when a checkpoint completes). The experiment must be given here: the expansion service
# decides how KafkaIO expands, not the Python pipeline's options.
start_expansion() {
  need_python
  local pid; pid="$(pid_of beam-expansion)"
  if [[ -n "$pid" ]]; then echo "beam-expansion already running (pid $pid)"; return 0; fi
  command -v java >/dev/null || die "java not found; install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
  local cp; cp="$(beam_classpath)"
  local port; port="$(free_port)"
  mkdir -p "$DIR"
  rm -f "$DIR/beam-expansion.env"
  local started=$SECONDS
  # shellcheck disable=SC2086
  setsid java ${CTPIPE_BEAM_EXPANSION_JVM_OPTS:--Xmx384m -Xms64m} -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
    "${FLINK_JDK17_OPTS[@]}" -Dorg.slf4j.simpleLogger.defaultLogLevel=info -cp "$cp" \
    org.apache.beam.sdk.expansion.service.ExpansionService "$port" \
    --defaultEnvironmentType=EMBEDDED --experiments=use_deprecated_read >>"$DIR/beam-expansion.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$DIR/beam-expansion.pid"
  [[ -n "${CTPIPE_SERVICES_OWNER_PID:-}" ]] && watch_owner "$CTPIPE_SERVICES_OWNER_PID" "$pid"
  local saved=$TIMEOUT; TIMEOUT=$KAFKA_TIMEOUT
  wait_ready beam-expansion "$pid" "$port"
  TIMEOUT=$saved
  echo "CTPIPE_BEAM_KAFKA_EXPANSION_ENDPOINT=$HOST:$port" >"$DIR/beam-expansion.env"
  echo "beam-expansion started (pid $pid) in $((SECONDS - started)) s: $HOST:$port; log $DIR/beam-expansion.log"
}

# Beam's Flink job server: the portable Job API (job port), its artifact staging service and an
# expansion service, on free loopback ports; it translates each pipeline into a Flink job and
# submits it to the cluster of flink.env.
start_job_server() {
  need_python
  local pid; pid="$(pid_of beam-job-server)"
  if [[ -n "$pid" ]]; then echo "beam-job-server already running (pid $pid)"; return 0; fi
  [[ -f "$DIR/flink.env" && -n "$(pid_of flink-jobmanager)" ]] \
    || die "no Flink cluster runs for $DIR; start it first: bash scripts/services.sh start flink"
  local master
  master="$(sed -n 's/^CTPIPE_FLINK_MASTER=//p' "$DIR/flink.env")"
  local cp; cp="$(beam_classpath)"
  local job artifact expansion
  job="$(free_port)"; artifact="$(free_port)"; expansion="$(free_port)"
  while [[ "$artifact" == "$job" ]]; do artifact="$(free_port)"; done
  while [[ "$expansion" == "$job" || "$expansion" == "$artifact" ]]; do expansion="$(free_port)"; done
  mkdir -p "$DIR/beam-job-server"
  rm -f "$DIR/beam-job-server.env"
  local started=$SECONDS
  # shellcheck disable=SC2086
  setsid java ${CTPIPE_BEAM_JOB_SERVER_JVM_OPTS:--Xmx512m -Xms128m} -XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError \
    "${FLINK_JDK17_OPTS[@]}" -Dorg.slf4j.simpleLogger.defaultLogLevel=info -Dorg.slf4j.simpleLogger.showDateTime=true \
    -cp "$cp" org.apache.beam.runners.flink.FlinkJobServerDriver \
    --job-host="$HOST" --job-port="$job" --artifact-port="$artifact" --expansion-port="$expansion" \
    --artifacts-dir="$DIR/beam-job-server/artifacts" --flink-master="$master" \
    --flink-conf-dir="$DIR/flink/conf" >>"$DIR/beam-job-server.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$DIR/beam-job-server.pid"
  [[ -n "${CTPIPE_SERVICES_OWNER_PID:-}" ]] && watch_owner "$CTPIPE_SERVICES_OWNER_PID" "$pid"
  local saved=$TIMEOUT; TIMEOUT=$KAFKA_TIMEOUT
  wait_ready beam-job-server "$pid" "$job"
  wait_ready beam-job-server "$pid" "$artifact"
  TIMEOUT=$saved
  cat >"$DIR/beam-job-server.env" <<EOF
CTPIPE_BEAM_JOB_ENDPOINT=$HOST:$job
CTPIPE_BEAM_ARTIFACT_ENDPOINT=$HOST:$artifact
CTPIPE_BEAM_EXPANSION_ENDPOINT=$HOST:$expansion
EOF
  echo "beam-job-server started (pid $pid) in $((SECONDS - started)) s: job endpoint $HOST:$job -> Flink $master; log $DIR/beam-job-server.log"
}

# ---------------------------------------------------------------------------------------------
# Kubernetes: a real kube-apiserver on etcd (built by scripts/fetch_kube.sh), for the tests of the
# controller's coordination.k8s.io Lease and server-side dry runs of deploy/k8s. No kubelet,
# scheduler or controller manager: objects are stored and served, nothing is run.

# kube_tls KDIR: a throw-away CA, the API server's serving certificate for localhost/127.0.0.1
# (the CA's key is deleted once it has signed), the service-account signing key pair and the
# static token of an administrator (system:masters), each file 0600 where it is a secret.
kube_tls() {
  local k="$1"
  command -v openssl >/dev/null || die "openssl not found (Debian: apt-get install openssl)"
  mkdir -p "$k/tls"
  (
    umask 077
    cd "$k/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj "/CN=ctpipe-test-kube-ca" -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=kube-apiserver" \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    rm -f ca.key ca.srl apiserver.csr apiserver.ext
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    openssl rand -hex 24 >../admin.token
    printf '%s,ctpipe-test-admin,ctpipe-test-admin,system:masters\n' "$(cat ../admin.token)" >../tokens.csv
  )
  chmod 0644 "$k/tls/ca.crt" "$k/tls/apiserver.crt" "$k/tls/sa.pub"
  [[ -s "$k/tls/apiserver.crt" && -s "$k/tls/sa.key" && -s "$k/admin.token" ]] \
    || die "openssl could not make the API server's certificates under $k/tls"
}

# kube_wait PID PORT KDIR: poll /readyz with the admin token until it answers 200 (every
# post-start hook ran: the bootstrap RBAC roles exist), PID exits, or the deadline passes.
kube_wait() {
  "$PYTHON" - "$1" "$2" "$3" "$KUBE_TIMEOUT" <<'EOF'
import os, ssl, sys, time, urllib.error, urllib.request
pid, port, kdir, timeout = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
ctx = ssl.create_default_context(cafile=f"{kdir}/tls/ca.crt")
token = open(f"{kdir}/admin.token").read().strip()
deadline, last = time.monotonic() + timeout, "no answer yet"
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"kube-apiserver exited ({last})")
    request = urllib.request.Request(f"https://127.0.0.1:{port}/readyz",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2, context=ctx) as reply:
            if reply.status == 200:
                sys.exit(0)
    except urllib.error.HTTPError as exc:
        last = f"/readyz: HTTP {exc.code}"
    except OSError as exc:
        last = f"{type(exc).__name__}: {exc}"
    time.sleep(0.2)
sys.exit(f"not ready after {timeout:g} s ({last})")
EOF
}

start_kube() {
  need_python
  local pid; pid="$(pid_of kube-apiserver)"
  if [[ -n "$pid" ]]; then echo "kube already running (pid $pid)"; return 0; fi
  local bin; bin="$(bash "$REPO/scripts/fetch_kube.sh" --bin-dir)" \
    || die "cannot build kube-apiserver and etcd (scripts/fetch_kube.sh failed; see above)"
  stop_service kube-etcd >/dev/null  # a leftover etcd of an earlier start
  local k="$DIR/kube" client peer api
  rm -rf "$k"; mkdir -p "$k"  # a new, empty cluster every start
  client="$(free_port)"; peer="$(free_port)"; api="$(free_port)"
  while [[ "$peer" == "$client" ]]; do peer="$(free_port)"; done
  while [[ "$api" == "$client" || "$api" == "$peer" ]]; do api="$(free_port)"; done
  kube_tls "$k"
  rm -f "$DIR/kube.env"
  local started=$SECONDS
  setsid "$bin/etcd" --name ctpipe-test --data-dir "$k/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://$HOST:$client" --advertise-client-urls "http://$HOST:$client" \
    --listen-peer-urls "http://$HOST:$peer" --initial-advertise-peer-urls "http://$HOST:$peer" \
    --initial-cluster "ctpipe-test=http://$HOST:$peer" --log-level warn >>"$DIR/kube-etcd.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$DIR/kube-etcd.pid"
  [[ -n "${CTPIPE_SERVICES_OWNER_PID:-}" ]] && watch_owner "$CTPIPE_SERVICES_OWNER_PID" "$pid"
  wait_ready kube-etcd "$pid" "$client"
  setsid "$bin/kube-apiserver" --etcd-servers "http://$HOST:$client" \
    --bind-address "$HOST" --advertise-address "$HOST" --secure-port "$api" \
    --tls-cert-file "$k/tls/apiserver.crt" --tls-private-key-file "$k/tls/apiserver.key" \
    --token-auth-file "$k/tokens.csv" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$k/tls/sa.pub" --service-account-signing-key-file "$k/tls/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.0.0.0/24 --endpoint-reconciler-type none --cert-dir "$k/certs" --profiling=false \
    --enable-priority-and-fairness=false --v 1 >>"$DIR/kube-apiserver.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$DIR/kube-apiserver.pid"
  [[ -n "${CTPIPE_SERVICES_OWNER_PID:-}" ]] && watch_owner "$CTPIPE_SERVICES_OWNER_PID" "$pid"
  local why
  if ! why="$(kube_wait "$pid" "$api" "$k" 2>&1)"; then
    echo "---- tail of $DIR/kube-apiserver.log" >&2
    tail -n 30 "$DIR/kube-apiserver.log" >&2 || true
    stop_kube >/dev/null
    die "kube-apiserver did not become ready: ${why##*$'\n'}"
  fi
  cat >"$DIR/kube.env" <<EOF
CTPIPE_KUBE_API_SERVER=https://$HOST:$api
CTPIPE_KUBE_CA_FILE=$k/tls/ca.crt
CTPIPE_KUBE_ADMIN_TOKEN_FILE=$k/admin.token
EOF
  echo "kube started (kube-apiserver pid $pid, etcd on $HOST:$client) in $((SECONDS - started)) s: https://$HOST:$api; logs $DIR/kube-apiserver.log, $DIR/kube-etcd.log"
}

stop_kube() {
  stop_service kube-apiserver
  stop_service kube-etcd
  rm -f "$DIR/kube.env"
}

stop_service() {  # SIGTERM, wait (bounded: 30 s for Kafka's controlled shutdown), then SIGKILL
  local name="$1" pid; pid="$(pid_of "$name")"
  rm -f "$DIR/$name.env"
  if [[ -z "$pid" ]]; then rm -f "$DIR/$name.pid"; echo "$name not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do  # up to 30 s
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
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
      kafka|broker) shift; [[ $# -eq 0 ]] || usage; start_kafka ;;
      s3) shift; [[ $# -eq 0 ]] || usage; start_s3 ;;
      flink) shift; [[ $# -eq 0 ]] || usage; start_flink ;;
      beam-job-server) shift; [[ $# -eq 0 ]] || usage; start_job_server ;;
      beam-expansion) shift; [[ $# -eq 0 ]] || usage; start_expansion ;;
      kube) shift; [[ $# -eq 0 ]] || usage; start_kube ;;
      *) usage ;;
    esac ;;
  stop)
    case "${1:-}" in
      kafka|broker) stop_service kafka ;;
      s3) stop_service s3 ;;
      flink) stop_flink ;;
      beam-job-server) stop_service beam-job-server ;;
      beam-expansion) stop_service beam-expansion ;;
      kube) stop_kube ;;
      all) stop_service beam-expansion; stop_service beam-job-server; stop_flink; stop_service kafka; stop_service s3
           stop_kube ;;
      *) usage ;;
    esac ;;
  env) print_env ;;
  *) usage ;;
esac
