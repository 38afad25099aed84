"""`ctpipe report` renders: the HTML holds its plots and tables, and headless Chromium draws it."""
from __future__ import annotations

import base64
import datetime as dt
import io
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from pipeline import synthetic
from pipeline.backfill import run_backfill
from pipeline.config import config_from_dict
from pipeline.options import pipeline_options
from pipeline.report import render_report

pytestmark = pytest.mark.slow


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.rows, self.headings, self.external = [], 0, [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "tr":
            self.rows += 1
        if tag == "h2":
            self._in_h2 = True
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    synthetic.write_jsonl(str(tmp / "in"), synthetic.generate(dt.datetime(2026, 11, 27), 6, 200, seed=5,
                                                              mean_shift_from_hour=4),
                          per_file_hours=6, rows_per_hour=203)
    config = config_from_dict({"storage": {"root": str(tmp / "store")},
                               "source": {"files": {"uri": str(tmp / "in" / "*.jsonl")}}})
    run_backfill(config, pipeline_options("runner_configs/direct.yaml"), None, None)
    path = tmp / "report.html"
    path.write_text(render_report(config.storage.root))
    return path


def test_report_has_plots_and_tables(report):
    parser = _Collect()
    parser.feed(report.read_text())
    assert parser.external == []
    assert parser.rows == 1 + 6  # header + one per window
    assert any("Drift scores" in h for h in parser.headings)
    assert any(h.startswith("Distributions: 20261127T0500Z against 20261127T0400Z") for h in parser.headings)
    alts = [i["alt"] for i in parser.images]
    assert "records per window" in alts and "drift scores" in alts
    assert {f"distribution of {n}" for n in ("temperature", "humidity", "firmware")} <= set(alts)
    from PIL import Image

    for image in parser.images:
        assert image["src"].startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(image["src"].split(",", 1)[1])))
        assert png.size[0] > 200 and len(set(png.convert("L").getdata())) > 10
    assert "QUARANTINED" in report.read_text()  # the mean shift at hour 4


def test_headless_chromium_screenshot_is_not_blank(report, tmp_path):
    from PIL import Image

    assert shutil.which("chromium"), "chromium is not installed; `make test` installs it (scripts/install_system_deps.sh)"
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                    "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri()],
                   check=True, capture_output=True, timeout=600)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, bars and lines, not a blank page
    assert max(count for count, _c in colours) < 0.95 * image.size[0] * image.size[1]


def test_model_history_shows_every_run_its_gate_decision_and_the_alias_moves(tmp_path):
    """Run records (a rejected candidate too, which never reaches the registry) and a real
    in-memory registry: each run is a row with the policy that started it; versions and moves follow."""
    import json
    import uuid

    from pipeline.report import model_history
    from training.registry import open_registry

    root = tmp_path / "store"
    (root / "runs").mkdir(parents=True)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "saved_model.pb").write_bytes(b"stored, never loaded")
    registry = open_registry(f"memory://report-{uuid.uuid4().hex}")
    windows = [{"window_id": "20261127T0000Z"}, {"window_id": "20261127T0100Z"}]
    runs = [("train-aaaa0001", True, 0.81, {"policies": [{"policy": "new_windows", "reason": "1 new"}]}),
            ("train-aaaa0002", False, 0.52, {"policies": [{"policy": "drift", "reason": "t js 0.3"}]}),
            ("train-aaaa0003", True, 0.84, None)]
    for i, (run_id, blessed, auc, trigger) in enumerate(runs):
        version = None
        if blessed:
            version = registry.push("sensors", str(model_dir), metrics={"auc": auc, "accuracy": 0.7},
                                    blessing={"blessed": True, "checks": []},
                                    lineage={"run_id": run_id, "windows": windows}).version
            registry.promote("sensors", version, alias="production", reason=f"blessed by run {run_id}")
        checks = [] if blessed else [{"passed": False, "description": "auc 0.52 >= 0.7"}]
        (root / "runs" / f"{run_id}.json").write_text(json.dumps({
            "kind": "train", "run_id": run_id, "finished_at": 1_795_000_000 + i, "windows": windows,
            "metrics": {"auc": auc, "accuracy": 0.7, "example_count": 100}, "version": version,
            "blessing": {"blessed": blessed, "checks": checks}, "trigger": trigger}))
    registry.rollback("sensors", alias="production")
    text = "\n".join(model_history(str(root), registry, "sensors"))
    table = text[text.index("<table id='runs'>"):text.index("</table>")]
    assert [line.split("<code>")[1].split("</code>")[0] for line in table.splitlines()[1:]] == [r[0] for r in runs]
    assert "new_windows" in table and "drift" in table and "ctpipe train" in table
    assert table.count(">rejected<") == 1 and "auc 0.52 &gt;= 0.7" in table
    versions = text[text.index("<table id='versions'>"):]
    assert "<td>v1</td>" in versions and "<td>v2</td>" in versions and "<td>v3</td>" not in versions
    moves = text[text.index("<table id='alias-moves'>"):]
    # the registry keeps the moves still in effect (v1's promotion) and every rollback (v2 -> v1)
    assert moves.count("<td>promote</td>") == 1 and "<td>rollback</td><td>2</td><td>1</td>" in moves
