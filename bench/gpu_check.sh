#!/usr/bin/env bash
# Quick training benchmark for a GPU machine (also runs on CPU-only ones): small synthetic data
# generated on the fly, ctpipe's trainer vs a plain Keras fit on the same TFRecords, one JSON result.
#
#   bench/gpu_check.sh            # from the repository root; about 1-3 minutes on 16 cores
#
# Writes $OUT/bench_training.json when $OUT is set (the JSON also goes to stdout) and
# $OUT/nvidia-smi.txt when nvidia-smi exists. Python: $PYTHON, else ./.venv/bin/python, else
# python3 (it needs ctpipe's requirements.lock installed). CTPIPE_BENCH_ARGS overrides the sizes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY="$(command -v python3)"; fi
"$PY" -c 'import tensorflow, tensorflow_transform, apache_beam' 2>/dev/null || {
  echo "gpu_check.sh: $PY cannot import tensorflow, tensorflow_transform and apache_beam;" \
       "install requirements.lock into a virtualenv at $ROOT/.venv or set PYTHON" >&2
  exit 2
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ctpipe-gpu-check-XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
ARGS=(${CTPIPE_BENCH_ARGS:---hours 3 --rows 4000 --epochs 3 --batch-size 256 --repeats 2})
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT"
  if command -v nvidia-smi >/dev/null; then nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true; fi
  ARGS+=(--out "$OUT/bench_training.json")
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
timeout "${CTPIPE_GPU_CHECK_TIMEOUT_S:-180}" "$PY" bench/bench_training.py --workdir "$WORK" "${ARGS[@]}"
