"""Prometheus rules, their unit tests, the scrape config and the Grafana dashboard.

promtool (Debian package `prometheus`; scripts/install_system_deps.sh installs it) is required:
without it these tests fail rather than skip, so a CI image that lacks it cannot pass silently.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "ctpipe-dashboard.json"

# The metrics pipeline/metrics.py exposes (as they appear in Prometheus).
METRICS = {
    "ctpipe_records_in_total": "counter",
    "ctpipe_records_out_total": "counter",
    "ctpipe_dead_letters_total": "counter",
    "ctpipe_windows_sealed_total": "counter",
    "ctpipe_stage_duration_seconds": "histogram",
    "ctpipe_last_success_timestamp_seconds": "gauge",
    "ctpipe_kafka_consumer_lag": "gauge",
    "ctpipe_watermark_timestamp_seconds": "gauge",
    "ctpipe_data_quality": "gauge",
    "ctpipe_drift_score": "gauge",
    "ctpipe_gate_decisions_total": "counter",
    "ctpipe_model_metric": "gauge",
    "ctpipe_models_pushed_total": "counter",
    "ctpipe_model_age_seconds": "gauge",
    "ctpipe_model_windows_behind": "gauge",
    "ctpipe_controller_runs_total": "counter",
    "ctpipe_controller_consecutive_rejections": "gauge",
}
SERIES = set(METRICS) | {f"{m}_{s}" for m, t in METRICS.items() if t == "histogram"
                         for s in ("bucket", "sum", "count")}
REQUIRED_ALERTS = {
    "CtpipeDeadLetterRateHigh", "CtpipeStreamNoRecentSuccess", "CtpipeTrainNoRecentSuccess",
    "CtpipeBackfillNoRecentSuccess", "CtpipeLastSuccessMissing", "CtpipeKafkaConsumerLagHigh",
    "CtpipeWindowQuarantined", "CtpipeDataCompletenessLow", "CtpipeDriftHigh",
    "CtpipeGateRejectingConsecutively", "CtpipeWatermarkStalled", "CtpipeModelStale",
    "CtpipeControllerRejectingRepeatedly",
}


def promtool():
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found on PATH: run scripts/install_system_deps.sh "
                    "(Debian package 'prometheus')")
    return path


def run_promtool(*args):
    return subprocess.run([promtool(), *args], cwd=PROM, capture_output=True, text=True,
                          timeout=300)


def test_check_rules():
    res = run_promtool("check", "rules", "rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_rules_unit_tests():
    res = run_promtool("test", "rules", "rules_test.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_check_config():
    res = run_promtool("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def test_promtool_rejects_a_broken_rule(tmp_path):
    """promtool really checks: a rule with a PromQL syntax error fails."""
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n"
                   "        expr: rate(ctpipe_records_in_total[5m]\n")
    res = subprocess.run([promtool(), "check", "rules", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode != 0


def rules():
    doc = yaml.safe_load((PROM / "rules.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alerts_are_documented_and_tested():
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert REQUIRED_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), name
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key, "").strip(), f"{name} lacks {key}"
    tests = yaml.safe_load((PROM / "rules_test.yml").read_text())["tests"]
    fired, silent = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else silent).add(case["alertname"])
    assert set(alerts) <= fired, f"never shown firing: {set(alerts) - fired}"
    assert set(alerts) <= silent, f"never shown silent: {set(alerts) - silent}"


# ------------------------------------------------------------------------------ PromQL names

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "and", "or", "unless", "inf", "nan"}


def series_names(expr):
    """Metric (and recording-rule) names an expression selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                           # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)                          # range / subquery durations
    e = re.sub(r"\boffset\s+\d+[smhdwy]", "", e)
    e = re.sub(r"(?<![A-Za-z0-9_:])\d+(\.\d+)?([eE][+-]?\d+)?", "", e)  # numbers, 1e-9
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        token, rest = m.group(0), e[m.end():]
        if token in _KEYWORDS or re.match(r"\s*\(", rest):   # keyword or function call
            continue
        if re.fullmatch(r"\d+[smhdwy]", token):
            continue
        names.add(token)
    return names


def test_name_extraction_can_fail():
    assert series_names('sum by (stage) (rate(ctpipe_records_in_totl{stage="x"}[5m]))') == \
        {"ctpipe_records_in_totl"}
    assert series_names("up == 0") == {"up"}
    assert series_names("ctpipe_drift_score / clamp_min(ctpipe_data_quality, 1e-9) > 0.1") == \
        {"ctpipe_drift_score", "ctpipe_data_quality"}
    assert series_names(
        'histogram_quantile(0.9, sum by (le) (rate(ctpipe_stage_duration_seconds_bucket[5m])))'
    ) == {"ctpipe_stage_duration_seconds_bucket"}


def test_rules_use_only_exposed_metrics():
    recorded = {r["record"] for r in rules() if "record" in r}
    for rule in rules():
        unknown = series_names(rule["expr"]) - SERIES - recorded
        assert not unknown, f"{rule.get('record') or rule.get('alert')}: unknown {unknown}"


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            out.extend((p["title"], t["expr"]) for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(dash["panels"])
    return dash, out


def test_dashboard_queries_use_only_exposed_metrics():
    dash, exprs = dashboard_exprs()
    assert dash["uid"] and dash["title"] and exprs
    used = set()
    for title, expr in exprs:
        names = series_names(expr)
        assert names, f"panel {title!r}: query selects no metric: {expr}"
        assert names <= SERIES, f"panel {title!r}: not a ctpipe metric: {names - SERIES}"
        used |= names
    base = {re.sub(r"_(bucket|sum|count)$", "", n) if n.startswith(
        "ctpipe_stage_duration_seconds") else n for n in used}
    assert base == set(METRICS), f"metrics without a panel: {set(METRICS) - base}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
