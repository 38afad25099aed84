"""`ctpipe stream --unbounded` on a real local Flink 1.19 cluster reading a real Apache Kafka over
SASL_SSL: Beam's KafkaIO runs inside the TaskManagers (through the Java expansion service), a
TaskManager is killed with SIGKILL mid-stream, Flink restores the last checkpoint, and once the
topic is drained every valid id is in exactly one sealed window, the windows hold the ids a
backfill of the same events seals, and the dead letters are exactly the bad messages. Then a
window whose end + allowed lateness is half a minute away gets one record, and records for it
sent once Flink's watermark passed that are too late: with ``window.late_data: side_output`` each
is in <root>/late/ exactly once, by id, read back with gzip + json, and in no sealed window
(transforms/panes.py: nothing is dropped for being late). While attached, the driver serves
metrics.port (pipeline/unbounded_metrics.py): one scrape of its /metrics, polled until it settles,
shows zero consumer lag, the records the group committed, the windows sealed since the job started
(by verdict, counted from the manifests) and the dead letters; Beam's job service is asked for the
job's metrics once while it runs (they stay empty until the job ends: docs say so).

The cluster is this module's own (a TaskManager is killed); everything is observed from outside
ctpipe: Flink's REST API (job state, checkpoints, restores), the consumer group's committed offsets
in Kafka, the sealed TFRecords read with tf.data. Every wait polls a condition. The Kafka password
(read from a file by the JVMs through Kafka's config providers) is in no Flink REST answer and in no
file that Flink (checkpoints, blobs, logs), the job server (staged artifacts), the expansion service
or the driver wrote.

Cost: 8 to 11 minutes on the shared 2-core machine under load (490 s, 642 s in two runs before the
too-late part; 465 s with it: 58 s cluster start, 385 s and 9 s for the two tests). The job's
submission takes ~2.5 min (docs/BENCHMARKS.md has the breakdown: ~65 s in the driver before it
stages, 6 s staging 296 jars, 20 s translation, 34 s uploading the jars to Flink, 20 s deploying);
the too-late part adds the wait for its window to close (10 to 70 s). Marked slow and integration.
"""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from core import window_store
from core.layout import window_id, window_id_start_ms
from tests import _procs
from tests._stream_check import sealed_ids
from transforms.panes import close_time_ms

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
STREAMING = REPO / "runner_configs" / "flink-local-streaming.yaml"
DIRECT = REPO / "runner_configs" / "direct.yaml"
WINDOW_S = 60
GROUP = "ctpipe-unbounded-test"


@pytest.fixture(scope="module")
def flink(tmp_path_factory):
    service = _procs.FlinkService(tmp_path_factory.mktemp("flink-stream"), expansion=True).start()
    try:
        yield service
    finally:
        service.stop()


def _rest(service, path: str):
    with urllib.request.urlopen(service.env["CTPIPE_FLINK_REST_URL"] + path, timeout=10) as resp:
        return json.load(resp)


def _wait(what: str, condition, timeout_s: float, interval_s: float = 0.5):
    """Poll ``condition`` until it returns a truthy value (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")


def _event(i: int, ts_s: float) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_s)) + f".{int(ts_s * 1000) % 1000:03d}Z"
    return json.dumps({"id": f"u-{i:05d}", "ts": ts, "device_id": f"dev-{i % 5:03d}", "firmware": "v1",
                       "temperature": 50.0 + i % 9, "vibration": 1.0 + (i % 4) / 10, "humidity": 40.0 + i % 3,
                       "label": i % 2}).encode()


def _write_config(path: Path, root: Path, data_glob: str, kafka: dict, metrics_port: int = 0) -> str:
    path.write_text(json.dumps({
        "storage": {"root": str(root)}, "source": {"files": {"uri": data_glob}, "kafka": kafka},
        "window": {"size": f"{WINDOW_S}s", "allowed_lateness": "15m", "late_data": "side_output"},
        "registry": {"uri": str(root) + "-registry", "model_name": "sensors"},
        "metrics": {"port": metrics_port, "bind": "127.0.0.1"}}))
    return str(path)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(port: int) -> dict:
    """(name, sorted label items) -> value of every ctpipe_* sample on the driver's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name.startswith("ctpipe_")}


def _submitted_job_id(stdout) -> str:
    """The job id of the driver's ``{"job_id": ..., "state": "SUBMITTED"}`` line (--json)."""
    for line in stdout:
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and answer.get("state") == "SUBMITTED":
            return answer["job_id"]
    pytest.fail("the driver ended without reporting its submitted job")


def _job_service_counters(endpoint: str, job_id: str):
    """How many ctpipe counters Beam's job service reports for the running job (GetJobMetrics);
    the error's text when it refuses the call."""
    import grpc
    from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

    try:
        with grpc.insecure_channel(endpoint) as channel:
            answer = beam_job_api_pb2_grpc.JobServiceStub(channel).GetJobMetrics(
                beam_job_api_pb2.GetJobMetricsRequest(job_id=job_id), timeout=30)
    except grpc.RpcError as exc:
        return f"GetJobMetrics failed: {exc.code()}: {exc.details()}"
    infos = list(answer.metrics.attempted) + list(answer.metrics.committed)
    return sum(1 for info in infos if info.labels.get("NAMESPACE") == "ctpipe")


def _ctpipe(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


class Producer:
    """Sends events to the topic with Kafka timestamps = their event times (what the read's
    CreateTime watermark follows); remembers each message's (partition, offset)."""

    def __init__(self, bootstrap: str, topic: str):
        self.topic = topic
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.valid: dict[str, float] = {}       # id -> event time (s)
        self.bad: dict[tuple, str] = {}         # (partition, offset) -> expected reason
        self.lines: list[bytes] = []            # everything sent, for the backfill

    def send(self, value: bytes, ts_s: float, key: bytes, reason: str | None = None, ev_id: str | None = None,
             partition: int | None = None):
        meta = self._producer.send(self.topic, value=value, key=key, partition=partition,
                                   timestamp_ms=int(ts_s * 1000)).get(timeout=30)
        self.lines.append(value)
        if reason is None:
            self.valid[ev_id] = ts_s
        else:
            self.bad[(meta.partition, meta.offset)] = reason

    def send_aside(self, value: bytes, ts_s: float, partition: int) -> None:
        """A record kept out of ``valid`` and ``lines`` (markers, too-late records)."""
        self._producer.send(self.topic, value=value, key=b"aside", partition=partition,
                            timestamp_ms=int(ts_s * 1000)).get(timeout=30)

    def close(self):
        self._producer.flush()
        self._producer.close()


def _end_offsets(bootstrap: str, topic: str) -> dict:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def _committed(bootstrap: str, topic: str) -> dict:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in consumer.partitions_for_topic(topic)}
    finally:
        consumer.close()


def _running_job(flink) -> str | None:
    jobs = [j for j in _rest(flink, "/jobs/overview")["jobs"] if j["state"] == "RUNNING"]
    return jobs[0]["jid"] if jobs else None


def _all_running(flink, jid: str) -> bool:
    job = _rest(flink, f"/jobs/{jid}")
    return job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"])


def _files_holding(secret: bytes, paths) -> list[str]:
    """Every file under ``paths`` (folders walked, files read whole) whose bytes contain ``secret``."""
    hits = []
    for path in map(Path, paths):
        for file in ([path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())):
            try:
                data = file.read_bytes()
            except OSError:  # removed while walking (Flink's temp files)
                continue
            if secret in data:
                hits.append(str(file))
    return hits


def test_files_holding_finds_a_secret_in_any_file(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "state.bin").write_bytes(b"\x00\x01 sasl.jaas.config=... password=\"s3cr3t\"; \xff")
    (tmp_path / "a" / "clean.log").write_bytes(b"sasl.jaas.config = [hidden]")
    assert _files_holding(b"s3cr3t", [tmp_path]) == [str(tmp_path / "a" / "b" / "state.bin")]
    assert _files_holding(b"s3cr3t", [tmp_path / "a" / "clean.log"]) == []


def _window_ids(root: str) -> dict:
    """window id -> sorted ids of its newest sealed version (raw TFRecords read with tf.data)."""
    import tensorflow as tf

    out = {}
    for window in window_store.list_sealed(root):
        ids = []
        for raw in tf.data.TFRecordDataset(window.file_paths("raw"), compression_type="GZIP").as_numpy_iterator():
            ids.append(tf.train.Example.FromString(raw).features.feature["id"].bytes_list.value[0].decode())
        out[window.window_id] = sorted(ids)
    return out


def test_unbounded_job_on_flink_survives_a_taskmanager_kill(flink, kafka_broker, kafka_topic, tmp_path):
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(kafka_topic, num_partitions=2, replication_factor=1)])
    admin.close()

    now = time.time()
    t0 = (int(now) // WINDOW_S) * WINDOW_S - 3 * WINDOW_S       # three whole windows before the current one
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    # A schema and a transform published by a backfill of older windows (the unbounded graph applies them).
    with open(seed_dir / "seed.jsonl", "wb") as fh:
        for i in range(40):
            fh.write(_event(90_000 + i, t0 - 40 * WINDOW_S + (i % 2) * WINDOW_S + i) + b"\n")
    root = tmp_path / "store"
    kafka = {"bootstrap_servers": kafka_broker.sasl_ssl_bootstrap, "topic": kafka_topic, "group_id": GROUP,
             "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username_env": "T_KAFKA_USER",
             "sasl_password_file": kafka_broker.password_file, "ssl_cafile": kafka_broker.ca_file,
             "expansion_service": flink.env["CTPIPE_BEAM_KAFKA_EXPANSION_ENDPOINT"]}
    metrics_port = _free_port()
    config = _write_config(tmp_path / "stream.yaml", root, str(seed_dir / "*.jsonl"), kafka, metrics_port)
    env = {**os.environ, "PYTHONPATH": str(REPO), "T_KAFKA_USER": kafka_broker.user,
           "CTPIPE_FLINK_MASTER": flink.env["CTPIPE_FLINK_MASTER"],
           "CTPIPE_BEAM_JOB_ENDPOINT": flink.env["CTPIPE_BEAM_JOB_ENDPOINT"]}
    done = _ctpipe("backfill", "--config", config, "--runner-config", str(DIRECT), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    seeded = set(_window_ids(str(root)))
    manifests_before = set(root.glob("windows/*/v*/MANIFEST.json"))

    producer = Producer(kafka_broker.bootstrap, kafka_topic)
    for i in range(60):                                          # batch A: 20 events in each of 3 windows
        producer.send(_event(i, t0 + (i % 3) * WINDOW_S + i / 2), t0 + (i % 3) * WINDOW_S + i / 2,
                      key=f"dev-{i % 5}".encode(), ev_id=f"u-{i:05d}")
    producer.send(b"{not json", t0 + 5, key=b"bad", reason="bad_json")
    producer.send(b"\xff\xfe{}", t0 + 65, key=b"bad", reason="not_utf8")

    job = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stream", "--unbounded", "--config", config,
                            "--runner-config", str(STREAMING), "--json"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=open(tmp_path / "job.err", "w"), text=True)
    try:
        jid = _wait("the unbounded job to run on Flink", lambda: _running_job(flink), 240)
        beam_job_id = _submitted_job_id(job.stdout)
        assert beam_job_id.startswith("BeamApp-"), beam_job_id  # the job server's invocation id
        # The read runs natively in Flink: KafkaIO's UnboundedSource is a Flink source vertex.
        names = [v["name"] for v in _rest(flink, f"/jobs/{jid}")["vertices"]]
        assert any("Read(KafkaUnboundedSource)" in n and n.startswith("Source:") for n in names), names
        # Batch A read and covered by a completed checkpoint: offsets are committed only then.
        end_a = _end_offsets(kafka_broker.bootstrap, kafka_topic)
        _wait("batch A's offsets committed by a completed checkpoint",
              lambda: _committed(kafka_broker.bootstrap, kafka_topic) == end_a, 300)
        # Batch A's three windows sealed (v1) before the kill, so that batch B's records are late
        # for them (otherwise a restore before the seal puts A and B in the same v1).
        _wait("batch A's three windows sealed",
              lambda: len(set(root.glob("windows/*/v1/MANIFEST.json")) - manifests_before) == 3, 300, 0.5)

        # SIGKILL the TaskManager that runs the Kafka source.
        source = next(v for v in _rest(flink, f"/jobs/{jid}")["vertices"] if "KafkaUnboundedSource" in v["name"])
        hosts = {t["taskmanager-id"] for t in
                 _rest(flink, f"/jobs/{jid}/vertices/{source['id']}/taskmanagers")["taskmanagers"]}
        pids = flink.taskmanager_pids()  # both alive: taskmanager-N is the N-th pid file's JVM
        victims = [pid for n, pid in enumerate(pids, 1) if f"taskmanager-{n}" in hosts]
        assert len(pids) == 2 and victims, (pids, hosts)
        restored_before = _rest(flink, f"/jobs/{jid}/checkpoints")["counts"]["restored"]
        killed_at = time.time()
        os.kill(victims[0], signal.SIGKILL)
        # Batch B while Flink recovers: late records for the three windows (within the allowed lateness).
        for i in range(60, 80):
            ts = t0 + (i % 3) * WINDOW_S + 30 + i / 10
            producer.send(_event(i, ts), ts, key=f"dev-{i % 5}".encode(), ev_id=f"u-{i:05d}")
        producer.send(b"{still not json", t0 + 70, key=b"bad", reason="bad_json")

        _wait("Flink to restore the job from its checkpoint",
              lambda: _rest(flink, f"/jobs/{jid}/checkpoints")["counts"]["restored"] > restored_before, 120, 0.2)
        _wait("every task RUNNING again", lambda: _all_running(flink, jid), 120, 0.2)
        running_at = time.time()

        def checkpoint_after_restore():
            latest = _rest(flink, f"/jobs/{jid}/checkpoints")["latest"]["completed"]
            return latest and latest["latest_ack_timestamp"] / 1000 > running_at and latest
        first = _wait("the first checkpoint after the restore", checkpoint_after_restore, 120, 0.2)
        recovered_at = first["latest_ack_timestamp"] / 1000
        print(f"recovery: kill -> RUNNING {running_at - killed_at:.1f} s, kill -> first new checkpoint "
              f"{recovered_at - killed_at:.1f} s")

        expected = sorted(producer.valid)
        end_b = _end_offsets(kafka_broker.bootstrap, kafka_topic)
        _wait("batch B's offsets committed", lambda: _committed(kafka_broker.bootstrap, kafka_topic) == end_b, 300)

        def drained():
            ids, _records, _n = sealed_ids(str(root))
            return sorted(i for i in ids if i.startswith("u-0")) == expected
        _wait("every produced valid id in a sealed window", drained, 300, 1.0)

        # Too-late records. KafkaIO's CreateTime watermark never runs ahead of the wall clock, so
        # the window they are for is one whose end + 15 min lateness is 10 to 70 s from now: an opener
        # record makes the job hold it (its on-time pane seals it), then once the panes' input
        # watermark (Flink REST, every subtask) is past its close time, records for it are too late.
        late_end = -(-(int(time.time()) + 10 - 15 * 60) // WINDOW_S) * WINDOW_S  # closes 10 to 70 s from now
        late_start = late_end - WINDOW_S
        late_window = window_id(late_start * 1000)
        producer.send_aside(_event(70_100, late_start + 10), late_start + 10, 0)
        _wait("the opener's window sealed", lambda: list((root / "windows" / late_window).glob("v*/MANIFEST.json")),
              120, 0.5)
        closes = close_time_ms(late_window, WINDOW_S, 15 * 60)
        panes_vertex = [v for v in _rest(flink, f"/jobs/{jid}")["vertices"] if "Panes" in v["name"]]
        assert panes_vertex, [v["name"] for v in _rest(flink, f"/jobs/{jid}")["vertices"]]

        # The watermark is moved by the stream itself, as in production: a heartbeat on every partition
        # every 2 s, stamped with the wall clock, so that each partition's CreateTime watermark follows
        # its newest record (an idle partition's watermark advances only through KafkaIO's backlog
        # check, which a loaded machine or a just-restored reader can hold back for minutes: CI saw it
        # stay behind for 180 s). A heartbeat is not an event (bad JSON): a dead letter, expected as one.
        beats = {"at": 0.0}

        def panes_watermark_past():
            if time.monotonic() - beats["at"] >= 2.0:
                for partition in (0, 1):
                    producer.send(b"{heartbeat", time.time(), key=b"beat", reason="bad_json", partition=partition)
                beats["at"] = time.monotonic()
            marks = [int(m["value"]) for v in panes_vertex
                     for m in _rest(flink, f"/jobs/{jid}/vertices/{v['id']}/watermarks")
                     if m["id"].endswith("currentInputWatermark")]
            return bool(marks) and min(marks) > closes + 5000
        try:
            _wait("the panes' input watermark past the window's close time", panes_watermark_past, 240, 0.5)
        except BaseException:
            print(f"close time {closes}, now {int(time.time() * 1000)}; every vertex's watermarks:")
            for v in _rest(flink, f"/jobs/{jid}")["vertices"]:
                print(v["name"][:120], _rest(flink, f"/jobs/{jid}/vertices/{v['id']}/watermarks"))
            raise
        too_late = {}
        for k in range(6):
            ts = late_start + 20 + k
            producer.send_aside(_event(70_000 + k, ts), ts, k % 2)
            too_late[f"u-{70_000 + k:05d}"] = late_window
        producer.close()

        def late_ids():
            out = {}
            for path in (root / "late").rglob("*.jsonl.gz"):
                for line in gzip.decompress(path.read_bytes()).decode().splitlines():
                    out.setdefault(json.loads(line)["id"], []).append(path.parent.name)
            return out
        _wait("every too-late record in late/", lambda: len(late_ids()) == len(too_late), 300, 1.0)
        end_c = _end_offsets(kafka_broker.bootstrap, kafka_topic)
        _wait("the opener's and the too-late records' offsets committed",
              lambda: _committed(kafka_broker.bootstrap, kafka_topic) == end_c, 300)

        # The driver's /metrics: settled once its poll saw the last commit and the last manifest.
        def settled():
            new = [json.loads(p.read_text()) for p in root.glob("windows/*/v*/MANIFEST.json")
                   if p not in manifests_before]
            want = {("ctpipe_windows_sealed_total", (("verdict", v),)): float(
                sum(1 for m in new if m["validation"]["verdict"] == v)) for v in ("PASS", "WARN", "QUARANTINED")}
            want.update({("ctpipe_kafka_consumer_lag", (("partition", str(p)), ("topic", kafka_topic))): 0.0
                         for p in end_c})
            want[("ctpipe_records_in_total", (("source", "kafka"), ("stage", "stream")))] = float(sum(end_c.values()))
            for reason in set(producer.bad.values()):
                want[("ctpipe_dead_letters_total", (("reason", reason), ("stage", "stream")))] = float(
                    sum(1 for r in producer.bad.values() if r == reason))
            got = _scrape(metrics_port)
            return got if all(got.get(k) == v for k, v in want.items()) else None
        scraped = _wait("the driver's /metrics to show the drained job", settled, 60, 1.0)
        last_success = scraped[("ctpipe_last_success_timestamp_seconds", (("job", "stream"),))]
        assert killed_at < last_success <= time.time()
        newest_end = max(window_id_start_ms(p.parent.parent.name) / 1000 + WINDOW_S
                         for p in root.glob("windows/*/v*/MANIFEST.json") if p not in manifests_before)
        assert scraped[("ctpipe_watermark_timestamp_seconds", (("source", f"kafka-{kafka_topic}"),))] == newest_end
        beam_counters_while_running = _job_service_counters(flink.env["CTPIPE_BEAM_JOB_ENDPOINT"], beam_job_id)
        print(f"ctpipe counters in GetJobMetrics while the job runs: {beam_counters_while_running}")

        # No secret in what Flink holds of the job.
        password = kafka_broker.password
        for path in (f"/jobs/{jid}/plan", f"/jobs/{jid}/config"):
            assert password not in json.dumps(_rest(flink, path)), path
        # Nor in any file the cluster, the job server, the expansion service or the driver wrote:
        # Flink's checkpoints (KafkaIO's serialized source and reader state, the panes' state), its
        # blob store and temp dirs, the job server's staged artifacts, every log, the driver's
        # stderr, the storage root. The checkpoints are there (retained), so the scan covers state.
        assert [p for p in Path(flink.env["CTPIPE_FLINK_CHECKPOINT_DIR"]).rglob("_metadata")]
        assert _files_holding(password.encode(), [flink.state_dir, root, tmp_path / "job.err"]) == []
    finally:
        jid = _running_job(flink)
        if jid:  # cancel it the way an operator would, in Flink: the attached ctpipe then ends with exit 0
            urllib.request.urlopen(urllib.request.Request(f"{flink.env['CTPIPE_FLINK_REST_URL']}/jobs/{jid}?mode=cancel",
                                                          method="PATCH"), timeout=10).read()
        try:
            out, _ = job.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            job.kill()
            out, _ = job.communicate()
    assert job.returncode == 0, (tmp_path / "job.err").read_text()[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["state"] == "CANCELLED"

    # Every valid id in exactly one sealed window (newest versions), none twice.
    ids, records, _ = sealed_ids(str(root))
    streamed = [i for i in ids if i.startswith("u-0")]
    assert sorted(streamed) == expected and len(set(streamed)) == len(streamed) == 80
    sealed_by_window = _window_ids(str(root))
    windows = {wid: v for wid, v in sealed_by_window.items() if wid not in seeded and wid != late_window}
    assert len(windows) == 3
    # Too-late records: each once in late/, in its window's folder; in no sealed window, which
    # holds the opener alone.
    assert late_ids() == {i: [wid] for i, wid in too_late.items()}
    assert not set(too_late) & set(ids)
    assert sealed_by_window[late_window] == ["u-70100"]
    # Late records made new versions of windows sealed before them.
    versions = {w.window_id: w.version for w in window_store.list_sealed(str(root)) if w.window_id in windows}
    assert max(versions.values()) >= 2, versions

    # Dead letters: exactly the bad messages, at their positions, with their reasons.
    dead = {}
    for path in (root / "deadletter").rglob("*.json"):
        record = json.loads(path.read_text())
        dead[(int(record["source"].rsplit("/", 1)[1]), int(record["position"]))] = record["reason"]
    assert dead == producer.bad

    # A backfill over the same events (as files) seals the same windows with the same ids.
    events = tmp_path / "events"
    events.mkdir()
    (events / "all.jsonl").write_bytes(b"\n".join(producer.lines) + b"\n")
    other = tmp_path / "backfill"
    done = _ctpipe("backfill", "--config", _write_config(tmp_path / "backfill.yaml", other, str(events / "*.jsonl"),
                                                          kafka), "--runner-config", str(DIRECT), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _window_ids(str(other)) == windows
    backfill_reasons = sorted(json.loads(line)["reason"] for path in (other / "deadletter").rglob("*.jsonl")
                              for line in path.read_text().splitlines() if line.strip())
    assert backfill_reasons == sorted(producer.bad.values())
    # Beam's job service had none of ctpipe's counters while the job ran (pipeline/unbounded_metrics.py
    # says why the exporter does not read them).
    assert beam_counters_while_running == 0


def test_the_pipeline_proto_holds_no_kafka_password(flink, kafka_broker, kafka_topic, tmp_path, monkeypatch):
    """The Java consumer config carries a config-provider reference; the password (read here only
    to check it) appears nowhere in the expanded pipeline proto."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.config import KafkaSourceConfig
    from transforms.kafka.source import ReadKafkaUnbounded

    monkeypatch.setenv("T_KAFKA_USER", kafka_broker.user)
    cfg = KafkaSourceConfig(bootstrap_servers=kafka_broker.sasl_ssl_bootstrap, topic=kafka_topic,
                            security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                            sasl_username_env="T_KAFKA_USER", sasl_password_file=kafka_broker.password_file,
                            ssl_cafile=kafka_broker.ca_file,
                            expansion_service=flink.env["CTPIPE_BEAM_KAFKA_EXPANSION_ENDPOINT"])
    p = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    _ = p | ReadKafkaUnbounded(cfg)
    proto = p.to_runner_api().SerializeToString()
    reference = f"${{dir:{os.path.dirname(kafka_broker.password_file)}:{os.path.basename(kafka_broker.password_file)}}}"
    assert reference.encode() in proto  # the expanded Java transform holds the reference...
    assert kafka_broker.password.encode() not in proto  # ...and never the password
