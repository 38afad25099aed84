"""A relative runner config resolves from any working directory (a scheduler's temporary one).

Airflow runs each BashOperator in a fresh temporary directory; Kubernetes pods may run in any
directory. ``--runner-config runner_configs/direct.yaml`` must still find the file: in the source
tree of an editable install, or among the runner configs an installed ctpipe carries
(setup.py data_files -> <prefix>/share/ctpipe/runner_configs/). The options inside a runner
config that name local files (``setup_file: ./setup.py`` in dataflow.yaml) resolve the same way
and reach Beam as absolute paths, or fail naming the option.
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


def test_a_relative_setup_file_resolves_from_a_task_directory(tmp_path, monkeypatch):
    """dataflow.yaml's ``setup_file: ./setup.py`` from Airflow's temporary task directory: Beam would
    look for <task dir>/setup.py and refuse the job; ctpipe passes the source tree's, absolute."""
    for name in ("CTPIPE_GCP_PROJECT", "CTPIPE_GCP_REGION", "CTPIPE_GCS_BUCKET", "CTPIPE_DATAFLOW_SA",
                 "CTPIPE_WORKER_IMAGE", "CTPIPE_DATAFLOW_SUBNET"):
        monkeypatch.setenv(name, "x")
    task_dir = tmp_path / "airflow-task"
    task_dir.mkdir()
    monkeypatch.chdir(task_dir)
    flags = options.runner_flags("runner_configs/dataflow.yaml")
    (setup_flag,) = [f for f in flags if f.startswith("--setup_file=")]
    assert setup_flag == f"--setup_file={ROOT / 'setup.py'}"
    # The file Beam's stager checks for exists at that path, whatever the working directory.
    from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
    assert Path(PipelineOptions(flags).view_as(SetupOptions).setup_file).is_file()
    # A setup.py in the working directory wins, as Beam itself would read it.
    (task_dir / "setup.py").write_text("# the task's own\n")
    assert f"--setup_file={task_dir / 'setup.py'}" in options.runner_flags("runner_configs/dataflow.yaml")


def test_path_options_that_are_absolute_urls_or_keywords_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "runner.yaml"
    config.write_text("runner: PortableRunner\nsetup_file: /app/setup.py\nsdk_location: container\n"
                      "flink_job_server_jar: https://repo.example/beam-job-server.jar\n"
                      "extra_packages: [runner.yaml]\n")
    assert options.runner_flags(str(config)) == [
        "--runner=PortableRunner", "--setup_file=/app/setup.py", "--sdk_location=container",
        "--flink_job_server_jar=https://repo.example/beam-job-server.jar", f"--extra_packages={config}"]


def test_a_missing_relative_path_option_names_the_option(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(options, "_HERE", str(tmp_path / "no-source-tree"))  # a non-editable install
    config = tmp_path / "runner.yaml"
    config.write_text("runner: DataflowRunner\nsetup_file: ./setup.py\n")
    with pytest.raises(ConfigError, match=r"sets setup_file: \./setup\.py, which does not exist relative to the "
                                          r"current directory .*give an absolute path") as err:
        options.runner_flags(str(config))
    assert str(config) in str(err.value)


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
