"""A relative runner config resolves from any working directory (a scheduler's temporary one).

Airflow runs each BashOperator in a fresh temporary directory; Kubernetes pods may run in any
directory. ``--runner-config runner_configs/direct.yaml`` must still find the file: in the source
tree of an editable install, or among the runner configs an installed ctpipe carries
(setup.py data_files -> <prefix>/share/ctpipe/runner_configs/).
"""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core.errors import ConfigError
from pipeline import options

ROOT = Path(__file__).resolve().parents[2]


def test_installed_runner_configs_resolve_from_another_directory(tmp_path, monkeypatch):
    prefix = tmp_path / "prefix"
    installed = prefix / "share" / "ctpipe" / "runner_configs"
    installed.mkdir(parents=True)
    (installed / "direct.yaml").write_text("runner: DirectRunner\n")
    elsewhere = tmp_path / "task-dir"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    monkeypatch.setattr(options, "_HERE", str(tmp_path / "no-source-tree"))  # a non-editable install
    assert options.resolve_runner_config("runner_configs/direct.yaml") == str(installed / "direct.yaml")
    assert options.runner_flags("runner_configs/direct.yaml") == ["--runner=DirectRunner"]
    # A file in the current directory still wins.
    (elsewhere / "runner_configs").mkdir()
    (elsewhere / "runner_configs" / "direct.yaml").write_text("runner: FlinkRunner\n")
    assert options.runner_flags("runner_configs/direct.yaml") == ["--runner=FlinkRunner"]


def test_missing_runner_config_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    with pytest.raises(ConfigError, match=r"runner_configs/nope\.yaml.*current directory") as err:
        options.resolve_runner_config("runner_configs/nope.yaml")
    assert str(tmp_path / "prefix") in str(err.value)


@pytest.mark.slow  # builds a wheel with pip (about 10 s)
def test_the_wheel_installs_every_runner_config_where_resolution_looks(tmp_path):
    """Build ctpipe's wheel from a copy of the sources: every runner_configs/*.yaml is in it as
    data under share/ctpipe/runner_configs/, which pip installs into sys.prefix."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "setup.py", src)
    for package in ("core", "pipeline", "transforms", "training", "examples", "runner_configs"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                          "--wheel-dir", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = (tmp_path / "dist").glob("ctpipe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = {Path(n).name for n in names if "/data/share/ctpipe/runner_configs/" in n}
    expected = {p.name for p in (ROOT / "runner_configs").glob("*.yaml")}
    assert expected and data == expected
    installed_parent = Path(options.installed_runner_configs_parent())
    assert installed_parent == Path(sys.prefix) / "share" / "ctpipe"
