#!/usr/bin/env bash
# A real kube-apiserver and etcd for the tests of the Kubernetes leader lease, built from the Go module
# proxy at pinned versions into a cache outside git.
#
#   scripts/fetch_kube.sh            build (or verify the cached build of) kube-apiserver and etcd
#   scripts/fetch_kube.sh --bin-dir  the same, then print the folder holding both binaries
#
# The versions are pinned by kube/go.mod (k8s.io/kubernetes v1.36.3, its k8s.io/* staging modules
# replaced by their published v0.36.3 releases; etcd's server at the version Kubernetes pins) and
# every module's hash by kube/go.sum: the go command refuses a module whose hash differs. A build is
# staged and moved into place only once both binaries built, so the cache never holds half a build.
# A stamp (the sha256 of kube/go.mod, kube/go.sum, kube/cmd and the Go version) marks a finished
# build: with it in place the script runs no compiler and asks no network.
# Settings:
#   CTPIPE_KUBE_DIR  cache: bin/ (the binaries), gomod/ (GOMODCACHE), gobuild/ (GOCACHE)
#                    (default ${XDG_CACHE_HOME:-$HOME/.cache}/ctpipe/kube)
#   GO               the go command (default: go on PATH, else /usr/local/go/bin/go); Go 1.26 or newer
#   CTPIPE_KUBE_NICE niceness of the compile (default 10, so a build does not starve other work)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULE="$REPO/kube"
KUBE_DIR="${CTPIPE_KUBE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ctpipe/kube}"
BIN="$KUBE_DIR/bin"
NICE="${CTPIPE_KUBE_NICE:-10}"
STAGING=""
trap '[[ -n "$STAGING" ]] && rm -rf "$STAGING"' EXIT

die() { echo "fetch_kube.sh: $*" >&2; exit 1; }
note() { echo "fetch_kube.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

find_go() {
  if [[ -n "${GO:-}" ]]; then command -v "$GO" >/dev/null 2>&1 || die "GO=$GO is not a command"; echo "$GO"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  [[ -x /usr/local/go/bin/go ]] && { echo /usr/local/go/bin/go; return; }
  die "no go command found; install Go 1.26 or newer (Debian: apt-get install golang) or set GO"
}

stamp_of() {  # stamp_of GO: what a finished build was made from
  {
    "$1" version
    (cd "$MODULE" && find go.mod go.sum cmd -type f | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

build() {
  local go; go="$(find_go)"
  local have; have="$("$go" env GOVERSION)"
  [[ "$have" =~ ^go1\.([0-9]+) ]] && (( BASH_REMATCH[1] >= 26 )) \
    || die "$go is $have; kube/go.mod needs Go 1.26 or newer (set GO to a newer go command)"
  local stamp; stamp="$(stamp_of "$go")"
  if [[ -x "$BIN/kube-apiserver" && -x "$BIN/etcd" && "$(cat "$BIN/.stamp" 2>/dev/null)" == "$stamp" ]]; then
    note "kube-apiserver and etcd in $BIN (cached build, nothing compiled, no network)"
    return 0
  fi
  export GOMODCACHE="$KUBE_DIR/gomod" GOCACHE="$KUBE_DIR/gobuild" GOFLAGS="-mod=readonly" GOTOOLCHAIN=local
  export GOWORK=off
  mkdir -p "$KUBE_DIR"
  local log="$KUBE_DIR/build.log"
  : >"$log"
  note "downloading the pinned modules (kube/go.sum) into $GOMODCACHE"
  if ! (cd "$MODULE" && "$go" mod download -x) >>"$log" 2>&1; then
    local refused; refused="$(grep -E 'reading https?://|GOPROXY=off|: (404|410|403)|checksum mismatch|SECURITY ERROR' "$log" \
      | head -n 3 || true)"
    tail -n 15 "$log" >&2
    die "the Go module proxy did not give the pinned modules${refused:+ (${refused//$'\n'/; })}; nothing was built. \
Full log: $log. A module the proxy refuses cannot be had here: change the pin in kube/go.mod (then 'go mod tidy' in kube/)"
  fi
  STAGING="$(mktemp -d "$KUBE_DIR/.build.XXXXXX")"
  local started=$SECONDS
  note "compiling kube-apiserver and etcd (nice $NICE; a cold build takes several minutes, a cached one seconds)"
  if ! (cd "$MODULE" && nice -n "$NICE" "$go" build -trimpath -ldflags=-s -o "$STAGING/kube-apiserver" \
          k8s.io/kubernetes/cmd/kube-apiserver && \
        nice -n "$NICE" "$go" build -trimpath -ldflags=-s -o "$STAGING/etcd" ./cmd/etcd) >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "go build failed; nothing was placed in $BIN. Full log: $log"
  fi
  mkdir -p "$BIN"
  mv -f "$STAGING/kube-apiserver" "$BIN/kube-apiserver"
  mv -f "$STAGING/etcd" "$BIN/etcd"
  echo "$stamp" >"$BIN/.stamp"
  note "built kube-apiserver and etcd into $BIN in $((SECONDS - started)) s"
}

case "${1:-}" in
  "") [[ $# -le 1 ]] || usage ;;
  --bin-dir) [[ $# -eq 1 ]] || usage ;;
  *) usage ;;
esac
mkdir -p "$KUBE_DIR"
exec 9>"$KUBE_DIR/.fetch.lock"; flock 9  # one build at a time per cache
build
[[ "${1:-}" == --bin-dir ]] && echo "$BIN"
exit 0
