"""Every alert rule and dashboard query selects series that ctpipe really emits.

A backfill, a `ctpipe stream --until-idle` run (real Apache Kafka), a `ctpipe train` run and a
`ctpipe controller --once` check, each
the real CLI in its own process, push to a real Pushgateway; a real Prometheus scrapes it with
honor_labels (as deploy/prometheus/prometheus.yml does) and evaluates deploy/prometheus/rules.yml.
Then, through Prometheus's HTTP API:
- every recording rule has produced series;
- every series selector of every alert expression returns series (an alert's whole expression
  is a condition: empty while nothing is wrong, so its selectors are what must exist);
- every Grafana dashboard query returns series;
- and the label values the rules and panels pick (stage, job, dimension) exist per command.
"""
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ctpipe-dashboard.json"
CLI_TIMEOUT_S = 900

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
             "unless", "inf", "nan"}


def _mask(text, pattern):
    return re.sub(pattern, lambda m: " " * len(m.group(0)), text)


def selectors(expr: str) -> list:
    """The vector selectors of a PromQL expression (``name`` or ``name{matchers}``), in order."""
    masked = _mask(expr, r'"(?:[^"\\]|\\.)*"')                       # string literals
    masked = _mask(masked, r"\[[^\]]*\]")                             # range / subquery durations
    masked = _mask(masked, r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
    masked = _mask(masked, r"\{[^}]*\}")                              # matchers (kept from expr below)
    found = []
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", masked):
        name, rest = m.group(0), masked[m.end():]
        if name in _KEYWORDS or re.match(r"\s*\(", rest):
            continue
        end = m.end()
        matchers = re.match(r"\s*(\{[^}]*\})", expr[end:])
        found.append(name + (matchers.group(1) if matchers else ""))
    return found


def test_selector_extraction():
    assert selectors('sum by (stage) (rate(ctpipe_records_in_total{stage="x"}[5m]))') == [
        'ctpipe_records_in_total{stage="x"}']
    assert selectors('time() - ctpipe:last_success_timestamp_seconds{ctpipe_job="train"} > 3 * 3600') == [
        'ctpipe:last_success_timestamp_seconds{ctpipe_job="train"}']
    assert selectors('label_replace(up, "a", "$1", "job", "(.+)") offset 1h and on() (x > bool 0)') == ["up", "x"]
    assert selectors("clamp_min(sum(rate(a_total[15m])), 1e-9)") == ["a_total"]


def rules():
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_queries():
    out = []

    def walk(panels):
        for panel in panels:
            out.extend((panel["title"], t["expr"]) for t in panel.get("targets", []))
            walk(panel.get("panels", []))
    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def ctpipe(*args, config):
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=CLI_TIMEOUT_S)
    assert proc.returncode == 0, f"ctpipe {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def test_rules_and_dashboard_select_series_ctpipe_emits(tmp_path, make_events, kafka_broker, kafka_topic,
                                                          pushgateway, prometheus):
    from pipeline import synthetic
    from pipeline.config import config_from_dict
    from transforms.kafka.produce import produce_generated

    # History for the backfill: 2026-11-27 00:00-03:00 in files; the live part, 03:00-06:00, in Kafka.
    events_glob, _ = make_events(hours=3, rows_per_hour=200)
    data = {
        "storage": {"root": str(tmp_path / "store")},
        "source": {"files": {"uri": events_glob},
                   "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topic": kafka_topic,
                             "group_id": f"g-{kafka_topic}"}},
        "window": {"size": "1h", "allowed_lateness": "15m"},
        "training": {"epochs": 1},
        "gate": {"thresholds": [{"metric": "example_count", "lower_bound": 10}]},
        "registry": {"uri": str(tmp_path / "registry"), "model_name": "sensors"},
        "metrics": {"pushgateway": pushgateway.address},
    }
    config = tmp_path / "ctpipe.yaml"
    config.write_text(yaml.safe_dump(data))
    produce_generated(config_from_dict(data), kafka_topic,
                      synthetic.generate(dt.datetime(2026, 11, 27, 3), 3, 200, seed=19), None)
    server = prometheus([pushgateway.address], rule_files=[RULES])

    ctpipe("backfill", config=config)
    stream = ctpipe("stream", "--until-idle", "--json", config=config)
    assert '"sealed"' in stream.stdout
    ctpipe("train", config=config)  # the gate blesses (example_count >= 10): a model is pushed
    # The controller's first check sees every window as new and fires; train ran those inputs
    # already, so it trains nothing, and pushes its freshness and run gauges (job ctpipe_controller).
    once = ctpipe("controller", "--once", "--json", config=config)
    assert json.loads(once.stdout)["outcome"] == "already-trained"

    # Prometheus has scraped the last push (train's) and evaluated the rules on it; every other
    # series below then shows up within a few scrapes.
    assert server.wait_for('ctpipe:last_success_timestamp_seconds{ctpipe_job="train"}', timeout_s=120)
    missing = []
    # What each command must have emitted, by the label values the rules and panels use.
    for expr in ('ctpipe_records_in_total{job="ctpipe_backfill",stage="backfill"}',
                 'ctpipe_records_in_total{job="ctpipe_stream",stage="stream",source="kafka"}',
                 'ctpipe_drift_score{job="ctpipe_stream"}',
                 'ctpipe_data_quality{job="ctpipe_stream",dimension="timeliness_p95_s"}',
                 'ctpipe_data_quality{job="ctpipe_stream",dimension="completeness"}',
                 'ctpipe_windows_sealed_total{job="ctpipe_stream",verdict="QUARANTINED"}',
                 'ctpipe_gate_decisions_total{job="ctpipe_train",outcome="rejected"}',
                 'ctpipe_model_age_seconds{job="ctpipe_controller",model="sensors"}',
                 'ctpipe_controller_runs_total{job="ctpipe_controller",outcome="already-trained"}',
                 'ctpipe:last_success_timestamp_seconds{ctpipe_job="backfill"}',
                 'ctpipe:last_success_timestamp_seconds{ctpipe_job="stream"}',
                 'ctpipe:last_success_timestamp_seconds{ctpipe_job="train"}'):
        if not server.wait_for(expr, timeout_s=15):
            missing.append(f"expected series: {expr}")
    for rule in rules():
        if "record" in rule:
            if not server.wait_for(rule["record"], timeout_s=15):
                missing.append(f"recording rule {rule['record']} produced no series")
            continue
        server.query(rule["expr"])  # the whole expression evaluates (an error raises)
        for selector in selectors(rule["expr"]):
            if not server.wait_for(selector, timeout_s=15):
                missing.append(f"alert {rule['alert']}: {selector} selects no series")
    for title, expr in dashboard_queries():
        if not server.wait_for(expr, timeout_s=15):
            missing.append(f"panel {title!r}: {expr} returns no series")
    assert not missing, "\n".join(missing)
