"""``ctpipe --help``, every ``ctpipe <command> --help`` and the read-only commands load no
TensorFlow, TFDV, tf.Transform or Beam: each runs in a fresh interpreter that then reports which
of those modules it imported (a check that can fail, unlike a timing)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests._cli import all_parsers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("tensorflow", "apache_beam", "tensorflow_data_validation", "tensorflow_transform")
WINDOW = "20261127T0000Z"

# Runs each argv in turn; after each, records its exit code and the heavy modules loaded so far.
WRAPPER = """
import contextlib, io, json, sys
from pipeline.cli.main import main
report = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    report.append({"argv": argv, "rc": rc, "heavy": sorted(m for m in %r if m in sys.modules)})
print(json.dumps(report))
""" % (HEAVY,)


def run_commands(argvs, cwd):
    proc = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(argvs)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A local storage root with one sealed window and one schema version, and its config."""
    tmp = tmp_path_factory.mktemp("light")
    root = tmp / "store"
    window = root / "windows" / WINDOW / "v1"
    window.mkdir(parents=True)
    (window / "MANIFEST.json").write_text(json.dumps({
        "window_id": WINDOW, "version": 1, "record_count": 10, "dead_letters": 0, "files": [],
        "transform_fingerprint": "f0", "schema_version": 1,
        "validation": {"verdict": "PASS", "reasons": []}}))
    (root / "schema" / "v1").mkdir(parents=True)
    (root / "schema" / "v1" / "schema.pbtxt").write_text('feature { name: "id" type: BYTES }\n')
    config = tmp / "ctpipe.yaml"
    config.write_text(f"storage: {{root: {root}}}\nregistry: {{uri: {tmp / 'registry'}}}\n")
    return str(config)


def test_help_of_every_command_loads_nothing_heavy(tmp_path):
    argvs = [list(prefix) + ["--help"] for prefix, _parser in all_parsers()]
    report = run_commands(argvs, str(tmp_path))
    assert len(report) == len(argvs) > 20
    for entry in report:
        assert entry["rc"] == 0, entry
        assert entry["heavy"] == [], f"ctpipe {' '.join(entry['argv'])} imported {entry['heavy']}"


@pytest.mark.parametrize("argv, rc", [
    (["windows", "list"], 0),
    (["windows", "list", "--all-versions", "--json"], 0),
    (["windows", "show", WINDOW], 0),
    (["schema", "show"], 0),
    (["schema", "show", "--version", "v1", "--json"], 0),
    (["config", "show"], 0),
    (["config", "schema"], 0),
])
def test_read_only_commands_load_nothing_heavy(store, tmp_path, argv, rc):
    [entry] = run_commands([argv + ["--config", store]], str(tmp_path))
    assert entry["rc"] == rc, entry
    assert entry["heavy"] == [], f"ctpipe {' '.join(argv)} imported {entry['heavy']}"


@pytest.mark.parametrize("argv, rc", [(["registry", "list"], 0), (["registry", "show", "1"], 6)])
def test_registry_read_commands_load_nothing_heavy(store, tmp_path, argv, rc):
    [entry] = run_commands([argv + ["--config", store]], str(tmp_path))
    assert entry["rc"] == rc, entry
    assert entry["heavy"] == [], f"ctpipe {' '.join(argv)} imported {entry['heavy']}"
