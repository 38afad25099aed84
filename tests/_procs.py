"""Start and stop real loopback services (Apache Kafka, moto S3 server) for tests and benchmarks.

One place for the process plumbing the pytest fixtures in ``tests/services.py`` use:

- ``Service``: a child process on a free 127.0.0.1 port, output to a log file, polled until the
  port accepts TCP connections (bounded by a deadline, never a blind sleep), stopped again (moto).
- ``KafkaService``: a real single-node KRaft Apache Kafka broker run by ``scripts/services.sh
  start kafka`` in its own state directory (PLAINTEXT and SASL_SSL/SCRAM-SHA-512 listeners, a
  throw-away CA, persistent data); the script is the single implementation ``make services-up``,
  the benchmarks and the tests share.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
SERVICES_SH = REPO / "scripts" / "services.sh"
FETCH_ENGINES_SH = REPO / "scripts" / "fetch_engines.sh"
READY_TIMEOUT_S = 120.0  # a deadline only: a loaded machine starts a server slowly

# Test-only credentials for the local moto S3 server; they open nothing real.
S3_ACCESS_KEY = "ctpipe-test"
S3_SECRET_KEY = "ctpipe-test-secret"
S3_REGION = "us-east-1"


def free_port(host: str = HOST) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _log_tail(log_path: Path, chars: int = 2000) -> str:
    try:
        return log_path.read_text(errors="replace")[-chars:]
    except OSError:
        return "<no log>"


@dataclass
class Service:
    """A started child process listening on ``HOST:port``; its output goes to ``log_path``."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "Service":
        """Launch the process and return once its port accepts connections.

        Raises RuntimeError (with the log tail) if the process exits first or the deadline passes.
        """
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.proc.pid})")
        if port_accepts(HOST, self.port):
            raise RuntimeError(f"cannot start {self.name}: {HOST}:{self.port} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        child_env = {**os.environ, **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=child_env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.proc.returncode} before listening on "
                    f"{HOST}:{self.port}; log {self.log_path}:\n{_log_tail(self.log_path)}")
            if port_accepts(HOST, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not accept connections on {HOST}:{self.port} within {timeout_s:.0f} s; "
            f"log {self.log_path}:\n{_log_tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL the process (a crash, not a clean shutdown) and wait until the port is free."""
        self._signal(signal.SIGKILL, wait_s=10.0)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process, escalating to SIGKILL after ``timeout_s``."""
        self._signal(signal.SIGTERM, wait_s=timeout_s)

    def _signal(self, sig: int, wait_s: float) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10.0)
        deadline = time.monotonic() + 10.0
        while port_accepts(HOST, self.port) and time.monotonic() < deadline:
            time.sleep(0.02)


def venv_bin(name: str) -> str:
    """Path of an executable installed next to the running Python interpreter."""
    return str(Path(sys.executable).parent / name)


def moto_service(log_dir: Path, port: int | None = None) -> Service:
    """An (unstarted) moto S3 server on a free loopback port."""
    port = port or free_port()
    return Service(
        name="s3", argv=[venv_bin("moto_server"), "-H", HOST, "-p", str(port)],
        port=port, log_path=log_dir / "s3.log")


# ---------------------------------------------------------------------------------------------
# Apache Kafka (scripts/services.sh)

KAFKA_START_TIMEOUT_S = 240.0  # a cold start fetches the jars (Maven) before the broker starts


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def java_missing_reason() -> str | None:
    """Why the Kafka broker cannot start here (no java), or None."""
    import shutil

    if shutil.which("java") is None:
        return "java is not installed (the Apache Kafka broker of the tests needs a JDK 17)"
    return None


class KafkaService:
    """A real Apache Kafka broker in its own state dir, started and stopped by scripts/services.sh.

    ``start()`` after ``kill()`` or ``stop()`` restarts it on the same ports with the same data
    dir, certificates and SCRAM user (the script keeps them in ``state_dir/kafka``).
    """

    def __init__(self, state_dir: Path, expansion: bool = False):
        self.state_dir = Path(state_dir)
        self.env: dict[str, str] = {}
        self.services = ("flink", "beam-job-server") + (("beam-expansion",) if expansion else ())
        """what start() starts: with ``expansion`` also Beam's Java expansion service for KafkaIO"""

    def _script(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
        env = {**os.environ, "CTPIPE_SERVICES_DIR": str(self.state_dir), "PYTHON": sys.executable,
               # a run killed before its teardown must not leave a broker behind
               "CTPIPE_SERVICES_OWNER_PID": str(os.getpid())}
        return subprocess.run(["bash", str(SERVICES_SH), *args], env=env, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)

    def start(self, timeout_s: float = KAFKA_START_TIMEOUT_S) -> "KafkaService":
        """Start (or restart) the broker; returns once both listeners answer Kafka requests."""
        if self.running:
            raise RuntimeError(f"Kafka in {self.state_dir} is already running (pid {self.pid})")
        done = self._script("start", "kafka", timeout_s=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services.sh start kafka failed (exit {done.returncode}) for state dir "
                               f"{self.state_dir}:\n{done.stderr[-4000:]}{done.stdout[-1000:]}")
        self.env = dict(line.split("=", 1) for line in
                        (self.state_dir / "kafka.env").read_text(encoding="utf-8").splitlines() if "=" in line)
        return self

    @property
    def log_path(self) -> Path:
        return self.state_dir / "kafka.log"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.state_dir / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def _ports(self) -> list[int]:
        try:
            return [int(p) for p in (self.state_dir / "kafka" / "ports").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self, timeout_s: float = 30.0) -> None:
        """SIGKILL the broker (a crash, not a clean shutdown); returns once it is gone and its ports closed."""
        pid = self.pid
        if pid is None or not pid_alive(pid):
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) or any(port_accepts(HOST, p) for p in self._ports()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka (pid {pid}) still alive or listening {timeout_s:g} s after SIGKILL")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after 30 s); a no-op when it is not running."""
        if not self.running:
            return
        done = self._script("stop", "kafka", timeout_s=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services.sh stop kafka failed: {done.stderr[-2000:]}")


def kafka_classpath(timeout_s: float = KAFKA_START_TIMEOUT_S) -> str:
    """The verified classpath of the ``kafka`` section of jvm/engines.lock (fetches when not cached)."""
    done = subprocess.run(["bash", str(FETCH_ENGINES_SH), "--classpath", "kafka"], capture_output=True,
                          text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/fetch_engines.sh --classpath kafka failed: {done.stderr[-3000:]}")
    return done.stdout.strip()


# ---------------------------------------------------------------------------------------------
# Apache Flink session cluster + Beam's Flink job server (scripts/services.sh)

FLINK_START_TIMEOUT_S = 420.0  # a cold start fetches ~200 jars (Maven) before the JVMs start


class FlinkService:
    """A local Flink 1.19 session cluster (a JobManager and two TaskManagers, each its own JVM) and
    Beam's Flink job server pointed at it, in their own state dir, started and stopped by
    scripts/services.sh (``start flink``, ``start beam-job-server``, ``stop flink``)."""

    def __init__(self, state_dir: Path, expansion: bool = False):
        self.state_dir = Path(state_dir)
        self.env: dict[str, str] = {}
        self.services = ("flink", "beam-job-server") + (("beam-expansion",) if expansion else ())
        """what start() starts: with ``expansion`` also Beam's Java expansion service for KafkaIO"""

    def _script(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
        env = {**os.environ, "CTPIPE_SERVICES_DIR": str(self.state_dir), "PYTHON": sys.executable,
               "CTPIPE_SERVICES_TIMEOUT": "180",  # a busy shared machine starts JVMs slowly
               "CTPIPE_SERVICES_OWNER_PID": str(os.getpid())}
        return subprocess.run(["bash", str(SERVICES_SH), *args], env=env, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)

    def start(self, timeout_s: float = FLINK_START_TIMEOUT_S) -> "FlinkService":
        """Start the cluster and the job server; returns once both TaskManagers are registered and
        the job server's ports accept connections."""
        for service in self.services:
            done = self._script("start", service, timeout_s=timeout_s)
            if done.returncode != 0:
                self.stop()
                raise RuntimeError(f"scripts/services.sh start {service} failed (exit {done.returncode}) for "
                                   f"state dir {self.state_dir}:\n{done.stderr[-4000:]}{done.stdout[-1000:]}")
        self.env = {}
        for name in (f"{service}.env" for service in self.services):
            self.env.update(line.split("=", 1) for line in
                            (self.state_dir / name).read_text(encoding="utf-8").splitlines() if "=" in line)
        return self

    def taskmanager_pids(self) -> list[int]:
        pids = []
        for path in self.env["CTPIPE_FLINK_TASKMANAGER_PID_FILES"].split(","):
            try:
                pids.append(int(Path(path).read_text().strip()))
            except (OSError, ValueError):
                continue
        return [p for p in pids if pid_alive(p)]

    def stop(self, timeout_s: float = 120.0) -> None:
        """Stop the job server and the cluster (SIGTERM, then SIGKILL); a no-op when nothing runs."""
        done = self._script("stop", "flink", timeout_s=timeout_s)
        if done.returncode != 0:
            raise RuntimeError(f"scripts/services.sh stop flink failed: {done.stderr[-2000:]}")
