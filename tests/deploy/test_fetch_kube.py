"""scripts/fetch_kube.sh and kube/: the pinned Go module that builds kube-apiserver and etcd.

The build itself (tens of minutes cold) is exercised by ``make test-kube`` through the ``kube_api``
fixture; these tests run the real go command without building anything.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests import _procs

SCRIPT = _procs.REPO / "scripts" / "fetch_kube.sh"
MODULE = _procs.REPO / "kube"


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.access(go, os.X_OK):
        pytest.fail("no go command: install Go 1.26 (the polyglot machines have /usr/local/go/bin/go)")
    return go


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_every_kubernetes_staging_module_is_pinned_to_its_release():
    """k8s.io/kubernetes requires its staging modules at v0.0.0 (they live in its own tree): each
    replace names the published v0.36.3 of the same module, matching k8s.io/kubernetes v1.36.3."""
    text = (MODULE / "go.mod").read_text()
    assert re.search(r"^\s*k8s\.io/kubernetes v1\.36\.3\b", text, re.M)
    replaces = re.findall(r"^\s*(k8s\.io/\S+) => (\S+) (\S+)$", text, re.M)
    assert len(replaces) >= 30
    assert all(src == dst and version == "v0.36.3" for src, dst, version in replaces), replaces
    assert "tool k8s.io/kubernetes/cmd/kube-apiserver" in text
    sums = (MODULE / "go.sum").read_text()
    assert "k8s.io/kubernetes v1.36.3 h1:" in sums and "go.etcd.io/etcd/server/v3 v3.6.8 h1:" in sums


def test_a_refusing_proxy_is_one_clear_error_and_nothing_is_built(tmp_path):
    cache = tmp_path / "kube"
    done = run(GO=_go(), CTPIPE_KUBE_DIR=str(cache), GOPROXY="off")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fetch_kube.sh: the Go module proxy did not give the pinned modules")
    assert "nothing was built" in last and str(cache / "build.log") in last
    assert not (cache / "bin").exists()


def test_an_old_go_is_refused(tmp_path):
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho go1.21.0\n")
    fake.chmod(0o755)
    done = run(GO=str(fake), CTPIPE_KUBE_DIR=str(tmp_path / "kube"))
    assert done.returncode == 1 and "needs Go 1.26 or newer" in done.stderr


def test_usage():
    done = run("--nonsense")
    assert done.returncode == 2 and "fetch_kube.sh --bin-dir" in done.stderr
