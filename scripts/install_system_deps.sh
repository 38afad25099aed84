#!/usr/bin/env bash
# Install the Debian packages ctpipe's tests and local services need, only where missing.
#   prometheus              promtool (rule/config checks and rule unit tests) and prometheus
#   prometheus-pushgateway  where batch runs push their metrics (integration tests)
#   chromium                headless screenshots of `ctpipe report`
#   openjdk-17-jdk-headless java, javac, keytool: the Apache Kafka broker of the tests and its TLS keystore
#   maven                   fetches the pinned JVM engines of jvm/engines.lock (scripts/fetch_engines.sh)
#   openssl                 the throw-away CA and broker certificate of scripts/services.sh
# Idempotent: packages already installed are left alone, and `apt-get update` runs once, only
# when something has to be installed. Non-interactive. Needs root (or sudo) to install.
# Usage: scripts/install_system_deps.sh [--check]   (--check: report, install nothing, exit 1
#        when something is missing)
set -euo pipefail

PACKAGES=(prometheus prometheus-pushgateway chromium openjdk-17-jdk-headless maven openssl)
export DEBIAN_FRONTEND=noninteractive

check_only=0
if [[ "${1:-}" == "--check" ]]; then
  check_only=1
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  if installed "$pkg"; then
    echo "ok: $pkg $(dpkg-query -W -f='${Version}' "$pkg") already installed"
  else
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "nothing to install"
  exit 0
fi

if [[ $check_only -eq 1 ]]; then
  echo "missing: ${missing[*]}"
  exit 1
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -E"
  else
    echo "error: installing ${missing[*]} needs root and sudo is not available" >&2
    exit 1
  fi
fi

echo "running: apt-get update"
$SUDO apt-get update -qq
echo "installing: ${missing[*]}"
$SUDO apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"

# The Debian packages start their services; the tests run their own instances on free ports.
for svc in prometheus prometheus-pushgateway; do
  if [[ " ${missing[*]} " == *" $svc "* ]] && command -v systemctl >/dev/null 2>&1 \
      && systemctl is-active --quiet "$svc" 2>/dev/null; then
    echo "stopping the $svc service started by the package"
    $SUDO systemctl stop "$svc" || true
  fi
done

for pkg in "${missing[@]}"; do
  if installed "$pkg"; then
    echo "installed: $pkg $(dpkg-query -W -f='${Version}' "$pkg")"
  else
    echo "error: $pkg did not install" >&2
    exit 1
  fi
done
command -v promtool >/dev/null && echo "promtool: $(command -v promtool)"
