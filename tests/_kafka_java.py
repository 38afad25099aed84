"""Apache Kafka's own Java client in tests: tests/java/CtpipeTestProducer.java, compiled with javac
against the pinned Kafka classpath (jvm/engines.lock), driven line by line over stdin.

Batches it writes are the Java client's (compression codecs, transactional batches and their
commit/abort markers), so the tests read data another client produced, not kafka-python's own.
"""
from __future__ import annotations

import hashlib
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path

from tests import _procs

SOURCE = _procs.REPO / "tests" / "java" / "CtpipeTestProducer.java"
LOG_CONFIG = _procs.REPO / "tests" / "java" / "log4j2.properties"
JVM_OPTS = ["-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG_CONFIG}"]


def compile_java(source: Path, out_dir: Path, classpath: str) -> Path:
    """Compile the tests/java class ``source`` into ``out_dir`` (once per source version and
    classpath); returns the class dir."""
    if shutil.which("javac") is None:
        raise RuntimeError("javac not found; install openjdk-17-jdk-headless (make system-deps)")
    digest = hashlib.sha256(source.read_bytes() + classpath.encode()).hexdigest()[:16]
    classes = Path(out_dir) / f"classes-{source.stem}-{digest}"
    if (classes / f"{source.stem}.class").is_file():
        return classes
    staging = Path(f"{classes}.tmp-{os.getpid()}")
    done = subprocess.run(["javac", "-cp", classpath, "-d", str(staging), str(source)], capture_output=True,
                          text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"javac {source} failed:\n{done.stderr[-3000:]}")
    staging.replace(classes)
    return classes


def compile_producer(out_dir: Path, classpath: str) -> Path:
    """Compile CtpipeTestProducer into ``out_dir``; returns the class dir."""
    return compile_java(SOURCE, out_dir, classpath)


class JavaProducer:
    """One CtpipeTestProducer process for ``topic``; see the Java file for the commands."""

    def __init__(self, classes: Path, classpath: str, bootstrap: str, topic: str, compression: str = "none",
                 transactional_id: str | None = None, log_path: Path | None = None):
        argv = ["java", *JVM_OPTS, "-cp", f"{classes}{os.pathsep}{classpath}", "CtpipeTestProducer",
                "--bootstrap", bootstrap, "--topic", topic, "--compression", compression]
        if transactional_id:
            argv += ["--transactional-id", transactional_id]
        self._log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, encoding="utf-8")
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _send(self, *fields: str) -> None:
        for field in fields:
            if "\t" in field or "\n" in field:
                raise ValueError(f"keys and values may not hold tabs or newlines: {field!r}")
        self.proc.stdin.write("\t".join(fields) + "\n")

    def plain(self, key: str, value: str) -> None:
        """Send outside any transaction (the non-transactional producer)."""
        self._send("plain", key, value)

    def send(self, key: str, value: str) -> None:
        """Send inside the open transaction."""
        self._send("send", key, value)

    def begin(self) -> None:
        self._send("begin")

    def commit(self) -> None:
        self._send("commit")

    def abort(self) -> None:
        self._send("abort")

    def sync(self, timeout_s: float = 120.0) -> int:
        """Flush, wait for every acknowledgement; returns how many records were acknowledged."""
        self._send("sync")
        self.proc.stdin.flush()
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"CtpipeTestProducer gave no answer within {timeout_s:g} s{self._tail()}") from None
        if line is None or not line.startswith("ok "):
            self.proc.wait(timeout=30)
            raise RuntimeError(f"CtpipeTestProducer failed (exit {self.proc.returncode}){self._tail()}")
        return int(line.split()[1])

    def close(self, timeout_s: float = 120.0) -> None:
        """End the input (flush, close) and wait for a clean exit."""
        try:
            self.proc.stdin.close()
            rc = self.proc.wait(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)
            if self._log is not subprocess.DEVNULL:
                self._log.close()
        if rc != 0:
            raise RuntimeError(f"CtpipeTestProducer exited {rc}{self._tail()}")

    def _tail(self) -> str:
        if self._log_path is None:
            return ""
        try:
            return f"; log {self._log_path}:\n" + Path(self._log_path).read_text(errors="replace")[-3000:]
        except OSError:
            return ""
