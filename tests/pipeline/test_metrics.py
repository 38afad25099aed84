"""Metrics: pushed by a batch run to a real Pushgateway, scraped from a long run by a real Prometheus."""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import metrics
from tests._procs import HOST, Service, free_port

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _binary(name):
    path = shutil.which(name)
    assert path, f"{name} is not installed; `make test` installs it via scripts/install_system_deps.sh"
    return path


def _samples(text, name):
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def test_backfill_pushes_its_counts_to_the_pushgateway(pushgateway, make_events, tmp_path):
    events_glob, stats = make_events(hours=2, rows_per_hour=60)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  root: {tmp_path}/store\nsource:\n  files:\n    uri: '{events_glob}'\n"
                   f"metrics:\n  pushgateway: '{pushgateway.address}'\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "--config", str(cfg), "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    text = urllib.request.urlopen(f"{pushgateway.url}/metrics", timeout=10).read().decode()
    records_in = _samples(text, "ctpipe_records_in_total")
    assert [s.labels["job"] for s in records_in] == ["ctpipe_backfill"]
    assert records_in[0].value == stats.valid + stats.malformed == record["counters"]["records_in"]
    dead = sum(s.value for s in _samples(text, "ctpipe_dead_letters_total"))
    assert dead == stats.malformed
    sealed = sum(s.value for s in _samples(text, "ctpipe_windows_sealed_total"))
    assert sealed == 2
    assert _samples(text, "ctpipe_last_success_timestamp_seconds")[0].value > time.time() - 600
    completeness = [s for s in _samples(text, "ctpipe_data_quality") if s.labels["dimension"] == "completeness"]
    assert {s.labels["window"] for s in completeness} == {"20261127T0000Z", "20261127T0100Z"}
    assert all(0 <= s.value <= 1 for s in completeness)


def test_long_run_metrics_are_scraped_by_prometheus(tmp_path):
    port = free_port()
    metrics.serve(port, addr=HOST)
    metrics.WATERMARK.labels(source="test-scrape").set(1795741200)
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ctpipe\n"
                      f"    static_configs:\n      - targets: ['{HOST}:{port}']\n")
    service = Service("prometheus", [_binary("prometheus"), f"--config.file={config}",
                                     f"--web.listen-address={HOST}:{prom_port}",
                                     f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                      prom_port, tmp_path / "prometheus.log").start()
    try:
        query = urllib.parse.quote('ctpipe_watermark_timestamp_seconds{source="test-scrape"}')
        deadline = time.monotonic() + 300
        result = []
        while time.monotonic() < deadline and not result:
            try:
                body = json.loads(urllib.request.urlopen(f"http://{HOST}:{prom_port}/api/v1/query?query={query}",
                                                         timeout=5).read())
                result = body["data"]["result"]
            except urllib.error.HTTPError as exc:  # 503 while the TSDB is still starting
                assert exc.code == 503, exc
            if not result:
                time.sleep(0.5)  # polling Prometheus' API until its next 1 s scrape lands, bounded above
        assert result, "Prometheus never scraped the ctpipe metrics endpoint"
        assert float(result[0]["value"][1]) == 1795741200
        assert result[0]["metric"]["job"] == "ctpipe"
    finally:
        service.stop()


def _pushed(pushgateway, name):
    text = urllib.request.urlopen(f"{pushgateway.url}/metrics", timeout=10).read().decode()
    return {tuple(sorted(s.labels.items())): s.value for s in _samples(text, name)}


def test_a_failed_or_rejected_run_keeps_the_last_success(pushgateway):
    """Each push replaces its run's group; the last-success time lives in a group of its own that
    only a successful run pushes, so a later run without success (e.g. the gate rejected) keeps it."""
    success = ("instance", ""), ("job", "ctpipe_train"), ("outcome", "success")
    metrics.LAST_SUCCESS.labels(job="train").set(1795741200)
    metrics.GATE_DECISIONS.labels(outcome="blessed").inc()
    metrics.push(pushgateway.address, "train")
    assert _pushed(pushgateway, "ctpipe_last_success_timestamp_seconds") == {success: 1795741200}
    # The next run (a new process) rejects its candidate: no success, gate decision "rejected".
    metrics.LAST_SUCCESS.remove("train")
    metrics.GATE_DECISIONS.labels(outcome="rejected").inc()
    metrics.push(pushgateway.address, "train")
    assert _pushed(pushgateway, "ctpipe_last_success_timestamp_seconds") == {success: 1795741200}
    gate = _pushed(pushgateway, "ctpipe_gate_decisions_total")
    assert gate[(("instance", ""), ("job", "ctpipe_train"), ("outcome", "rejected"))] >= 1
    # A worker of a multi-worker run pushes to its own group and replaces nothing of the chief's.
    metrics.push(pushgateway.address, "train", {"task": "worker-1"})
    groups = {labels for labels in _pushed(pushgateway, "ctpipe_gate_decisions_total")}
    assert {dict(g).get("task") for g in groups} == {None, "worker-1"}
    assert _pushed(pushgateway, "ctpipe_last_success_timestamp_seconds") == {success: 1795741200}


def test_every_verdict_and_gate_outcome_is_exported_from_the_start():
    """Alerts select these label values; their series exist (at 0) before the first occurrence."""
    from transforms.validation import PASS, QUARANTINED, WARN

    assert set(metrics.VERDICTS) == {PASS, WARN, QUARANTINED}
    text = generate_latest(metrics.REGISTRY).decode()
    assert {s.labels["verdict"] for s in _samples(text, "ctpipe_windows_sealed_total")} >= set(metrics.VERDICTS)
    assert {s.labels["outcome"] for s in _samples(text, "ctpipe_gate_decisions_total")} >= {"blessed", "rejected"}
