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
                   check=True, capture_output=True, timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, bars and lines, not a blank page
    assert max(count for count, _c in colours) < 0.95 * image.size[0] * image.size[1]
