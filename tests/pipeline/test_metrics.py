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
    pushgateway = pushgateway.address
    events_glob, stats = make_events(hours=2, rows_per_hour=60)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  root: {tmp_path}/store\nsource:\n  files:\n    uri: '{events_glob}'\n"
                   f"metrics:\n  pushgateway: '{pushgateway}'\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "backfill", "--config", str(cfg), "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout)
    text = urllib.request.urlopen(f"http://{pushgateway}/metrics", timeout=10).read().decode()
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
        deadline = time.monotonic() + 60
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
