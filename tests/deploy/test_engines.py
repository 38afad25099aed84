"""scripts/fetch_engines.sh and jvm/engines.lock: pinned JVM engines fetched with Maven, verified
by sha256, no network once cached.

Maven itself is replaced by a recording stand-in where a test must prove it is *not* run (a warm
fetch) or must see that it would be (a corrupt cached jar); the mismatch and lock tests run the real
Maven against the local repository the first fetch filled.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import _procs
from tests.services import _require_java

LOCK = _procs.REPO / "jvm" / "engines.lock"
ROOTS = _procs.REPO / "jvm" / "engines.in"
SCRIPT = _procs.FETCH_ENGINES_SH


def lock_entries(path: Path = LOCK) -> list[tuple[str, str, str]]:
    return [tuple(line.split()) for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def run(*args: str, timeout_s: float = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def fetched() -> str:
    """The real cache filled (fetched with Maven when cold); returns the kafka classpath."""
    _require_java()
    return _procs.kafka_classpath()


@pytest.fixture
def recording_mvn(tmp_path) -> tuple[str, Path]:
    """A stand-in for Maven that records each call and fails: (its path, the record file)."""
    record = tmp_path / "mvn-calls"
    script = tmp_path / "mvn"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\necho "stand-in Maven: no network here" >&2\nexit 1\n')
    script.chmod(0o755)
    return str(script), record


def test_the_lock_pins_every_jar_once_with_its_sha256():
    entries = lock_entries()
    assert entries, "jvm/engines.lock is empty"
    for section, coord, sha in entries:
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", section)
        assert re.fullmatch(r"[^:\s]+:[^:\s]+:[^:\s]+:[a-z]+(:[^:\s]+)?", coord), coord
        assert re.fullmatch(r"[0-9a-f]{64}", sha), coord
    artifacts = [(s, *c.split(":")[:2], *c.split(":")[4:]) for s, c, _ in entries]  # version and type aside
    assert len(set(artifacts)) == len(artifacts), "an artifact pinned twice (two versions)"
    kafka = {c.split(":")[1]: c.split(":")[2] for s, c, _ in entries if s == "kafka"}
    assert kafka["kafka_2.13"].startswith("4.") and kafka["kafka-clients"] == kafka["kafka_2.13"]
    assert "log4j-slf4j-impl" in kafka and "slf4j-api" in kafka  # a backend for Kafka's slf4j logging
    roots = [line.split()[:2] for line in ROOTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    locked = {(s, ":".join(c.split(":")[:3])) for s, c, _ in entries}
    assert all((s, c) in locked for s, c in roots), "a root of jvm/engines.in is missing from the lock"


def test_the_lock_pins_flink_1_19_and_beams_flink_job_server():
    by_section: dict[str, dict[str, str]] = {}
    for section, coord, _sha in lock_entries():
        group, artifact, version = coord.split(":")[:3]
        by_section.setdefault(section, {})[f"{group}:{artifact}"] = version
    flink = by_section["flink"]
    for module in ("flink-runtime", "flink-streaming-java", "flink-clients", "flink-rpc-akka-loader"):
        assert flink[f"org.apache.flink:{module}"].startswith("1.19."), module
    assert flink["org.apache.logging.log4j:log4j-slf4j-impl"] == flink["org.apache.logging.log4j:log4j-core"]
    job_server = by_section["beam-flink-job-server"]
    runner = job_server["org.apache.beam:beam-runners-flink-1.19"]
    assert job_server["org.apache.beam:beam-runners-java-job-service"] == runner  # one Beam version throughout
    assert job_server["org.apache.flink:flink-runtime"].startswith("1.19.")
    assert "org.slf4j:slf4j-simple" in job_server  # a logging backend
    kafka_io = by_section["beam-kafka-io"]  # KafkaIO for the unbounded graph, the job server's Beam version
    assert kafka_io["org.apache.beam:beam-sdks-java-io-kafka"] == runner
    assert kafka_io["org.apache.kafka:kafka-clients"].startswith("3.")  # the client Beam 2.62 is built against
    assert "com.github.jbellis:jamm" in kafka_io  # the embedded Java SDK harness needs it
    assert not any(name.startswith("io.confluent:") for name in kafka_io)  # not on Maven Central


def test_the_classpath_is_the_locked_jars_in_lock_order(fetched):
    jars = fetched.split(":")
    entries = [e for e in lock_entries() if e[0] == "kafka"]
    assert len(jars) == len(entries)
    for jar, (_section, coord, _sha) in zip(jars, entries):
        group, artifact, version = coord.split(":")[:3]
        assert os.path.basename(jar) == f"{group}.{artifact}-{version}.jar" and os.path.isfile(jar)


def test_a_warm_fetch_verifies_the_cache_and_runs_no_maven(fetched, recording_mvn):
    mvn, record = recording_mvn
    done = run(MVN=mvn)
    assert done.returncode == 0, done.stderr
    assert "cached, no network" in done.stderr
    assert not record.exists(), f"Maven ran: {record.read_text()}"


def test_a_corrupt_cached_jar_is_fetched_again_not_used(fetched, recording_mvn, tmp_path):
    mvn, record = recording_mvn
    entry = next(e for e in lock_entries() if e[1].startswith("org.slf4j:slf4j-api:"))
    lock = tmp_path / "engines.lock"
    lock.write_text(" ".join(entry) + "\n")
    cached = next(j for j in fetched.split(":") if "org.slf4j.slf4j-api-" in j)
    engines = tmp_path / "engines"
    (engines / "kafka").mkdir(parents=True)
    corrupt = engines / "kafka" / os.path.basename(cached)
    corrupt.write_bytes(Path(cached).read_bytes() + b"tampered")
    done = run("kafka", MVN=mvn, CTPIPE_ENGINES_DIR=str(engines), CTPIPE_ENGINES_LOCK=str(lock))
    assert done.returncode != 0
    assert "kafka: fetching 1 of 1 artifacts" in done.stderr
    assert record.exists(), "the corrupt jar was accepted without a new fetch"


def test_a_sha256_mismatch_fails_with_one_line_naming_the_artifact(fetched, tmp_path):
    section, coord, sha = next(e for e in lock_entries() if e[1].startswith("org.slf4j:slf4j-api:"))
    wrong = ("0" if sha[0] != "0" else "1") + sha[1:]
    lock = tmp_path / "engines.lock"
    lock.write_text(f"{section} {coord} {wrong}\n")
    engines = tmp_path / "engines"
    done = run("kafka", CTPIPE_ENGINES_DIR=str(engines), CTPIPE_ENGINES_LOCK=str(lock))
    assert done.returncode == 1, done.stderr
    mismatch = [line for line in done.stderr.splitlines() if "sha256 mismatch" in line]
    assert len(mismatch) == 1 and done.stderr.rstrip().endswith(mismatch[0].rstrip())
    assert f"sha256 mismatch for kafka artifact {coord}: lock {lock} says {wrong}, the downloaded jar has {sha}" \
        in mismatch[0]
    assert list((engines / "kafka").iterdir()) == []  # nothing unverified was placed


def _maven_repo() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.environ.get("CTPIPE_MAVEN_REPO") or os.path.join(cache, "ctpipe", "m2-repository"))


def _link_tree(src: Path, dst: Path) -> None:
    """A copy of ``src`` made of hard links (copies where linking fails), cheap for Maven's repository."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link, symlinks=True)


def test_a_tampered_jar_in_mavens_repository_is_refused_naming_the_file_to_delete(fetched, tmp_path):
    """The cached jar is gone and the one Maven's local repository holds was altered (a corrupt
    download, a tampered mirror): the real Maven copies it, the script refuses it in one line that
    names the artifact, both hashes and the file to delete, and places nothing."""
    section, coord, sha = next(e for e in lock_entries() if e[1].startswith("org.slf4j:slf4j-api:"))
    group, artifact, version = coord.split(":")[:3]
    repo = tmp_path / "m2"
    _link_tree(_maven_repo(), repo)
    jar = repo / Path(*group.split(".")) / artifact / version / f"{artifact}-{version}.jar"
    tampered = jar.read_bytes() + b"tampered"
    jar.unlink()  # a new file, not a write through the hard link into the real repository
    jar.write_bytes(tampered)
    lock = tmp_path / "engines.lock"
    lock.write_text(f"{section} {coord} {sha}\n")
    engines = tmp_path / "engines"
    done = run("kafka", CTPIPE_ENGINES_DIR=str(engines), CTPIPE_ENGINES_LOCK=str(lock), CTPIPE_MAVEN_REPO=str(repo))
    assert done.returncode == 1, done.stderr
    last = done.stderr.rstrip().splitlines()[-1]
    got = hashlib.sha256(tampered).hexdigest()
    assert last == (f"fetch_engines.sh: sha256 mismatch for kafka artifact {coord}: lock {lock} says {sha}, the "
                    f"downloaded jar has {got} (a tampered or changed artifact; if the lock is the stale side, "
                    f"regenerate it with 'make engines-lock', else delete {jar} and fetch again)")
    assert list((engines / "kafka").iterdir()) == []  # nothing unverified was placed
    assert hashlib.sha256((_maven_repo() / jar.relative_to(repo)).read_bytes()).hexdigest() == sha  # untouched


def test_the_lock_is_what_engines_in_resolves_to(fetched, tmp_path):
    out = tmp_path / "engines.lock"
    done = run("--lock", CTPIPE_ENGINES_LOCK=str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_text() == LOCK.read_text()
