#!/usr/bin/env bash
# The student benchmark in one device call: install the wheels the GPU machine lacks, then run
# student_throughput.py --quick (< 8 min on one H100 by estimate; README.md beside this file).
#
#   bash experiments/benchmarks/gpu_quick.sh [WHEELS_DIR] [extra student_throughput.py options]
#
# WHEELS_DIR (default: .gpu-wheels in the repo root, git-ignored) holds the wheels of ../shared/gpu-wheels;
# ../shared does not travel to the device machine, so copy them into the checkout first and name the folder
# in the call's carry:  cp -r ../shared/gpu-wheels .gpu-wheels
# Writes bench.jsonl, bench.md and gpu_quick.log into $OUT (the device call's return folder), else bench_out.
#
# Environment: OUT (output folder), PYTHON (default python3), GPU_QUICK_SITE (install target, default
# /tmp/site), GPU_QUICK_SKIP_INSTALL=1 (use the current environment as is: CPU tests, a machine that has
# everything).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WHEELS="$REPO/.gpu-wheels"
if [[ $# -gt 0 && "$1" != -* ]]; then
    WHEELS="$1"
    shift
fi
PY="${PYTHON:-python3}"
SITE="${GPU_QUICK_SITE:-/tmp/site}"
OUT_DIR="${OUT:-bench_out}"
cd "$REPO"

if [[ "${GPU_QUICK_SKIP_INSTALL:-0}" == 1 ]]; then
    echo "gpu_quick.sh: GPU_QUICK_SKIP_INSTALL=1: using the current environment, installing nothing"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    if [[ ! -d "$WHEELS" ]] || ! compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "gpu_quick.sh: no wheels in '$WHEELS': run 'cp -r ../shared/gpu-wheels .gpu-wheels' in the repo" \
             "root and name .gpu-wheels in the device call's carry (or pass the wheels folder as first argument)" >&2
        exit 2
    fi
    echo "gpu_quick.sh: installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1

mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_quick.log"
{
    echo "gpu_quick.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    else
        echo "nvidia-smi: not found"
    fi
    "$PY" - <<'EOF' || true
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "transformers", "peft", "bitsandbytes", "lightning", "hydra", "omegaconf"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:  # report, do not stop: the benchmark says what it needs
        print(name, "MISSING:", type(e).__name__, e)
import torch
print("cuda available", torch.cuda.is_available(), "| cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
EOF
} 2>&1 | tee "$LOG"

"$PY" experiments/benchmarks/student_throughput.py --quick --out-dir "$OUT_DIR" "$@" 2>&1 | tee -a "$LOG"
echo "gpu_quick.sh: done; $OUT_DIR holds: $(ls "$OUT_DIR" | tr '\n' ' ')" | tee -a "$LOG"
