"""scripts/install_system_deps.sh against stand-in dpkg-query/apt-get: idempotent, one update."""
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install_system_deps.sh"
PACKAGES = ["prometheus", "prometheus-pushgateway", "chromium", "openjdk-17-jdk-headless", "maven", "openssl"]

STUBS = {
    # installed packages are the lines of $STATE
    "dpkg-query": """#!/bin/sh
pkg=$(eval echo \\${$#})
if grep -qx "$pkg" "$STATE"; then
  case "$*" in *Status*) printf 'install ok installed';; *) printf '1.0';; esac
  exit 0
fi
exit 1
""",
    "apt-get": """#!/bin/sh
echo "apt-get $*" >> "$LOG"
case "$1" in
  update) exit 0;;
esac
skip=0
for a in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$a" in -o) skip=1;; -*|install) ;; *) echo "$a" >> "$STATE";; esac
done
""",
    "id": "#!/bin/sh\necho 0\n",
    "systemctl": "#!/bin/sh\necho \"systemctl $*\" >> \"$LOG\"\nexit 1\n",
}


def run(tmp_path, installed, *args):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    state, log = tmp_path / "state", tmp_path / "log"
    state.write_text("".join(f"{p}\n" for p in installed))
    log.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STATE": str(state), "LOG": str(log)}
    res = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                         timeout=60)
    return res, log.read_text().splitlines(), state.read_text().split()


def test_nothing_missing_runs_no_apt(tmp_path):
    res, calls, _ = run(tmp_path, PACKAGES)
    assert res.returncode == 0, res.stderr
    assert not [c for c in calls if c.startswith("apt-get")]
    assert "nothing to install" in res.stdout


def test_missing_packages_update_once_and_install_only_those(tmp_path):
    res, calls, state = run(tmp_path, ["chromium"])
    assert res.returncode == 0, res.stdout + res.stderr
    apt = [c for c in calls if c.startswith("apt-get")]
    assert [c for c in apt if " update" in c] == ["apt-get update -qq"]
    install = [c for c in apt if " install" in c]
    assert len(install) == 1
    assert "prometheus prometheus-pushgateway" in install[0] and "chromium" not in install[0]
    assert "-y" in install[0].split()
    assert sorted(state) == sorted(PACKAGES)
    # Second run: everything is there, nothing happens.
    res2, calls2, _ = run(tmp_path, state)
    assert res2.returncode == 0 and not [c for c in calls2 if c.startswith("apt-get")]


def test_check_mode_reports_without_installing(tmp_path):
    res, calls, _ = run(tmp_path, ["prometheus"], "--check")
    assert res.returncode == 1
    assert "missing: prometheus-pushgateway chromium" in res.stdout
    assert not [c for c in calls if c.startswith("apt-get")]


def test_script_is_executable_and_strict():
    assert os.access(SCRIPT, os.X_OK)
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert "DEBIAN_FRONTEND=noninteractive" in text
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
