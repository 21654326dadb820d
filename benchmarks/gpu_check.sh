#!/usr/bin/env bash
# GPU readiness check: one GPU, under 8 minutes (see benchmarks/gpu_check.py for what it measures).
#   bash benchmarks/gpu_check.sh            # STEPS, BATCH, INIT override the medium config
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
HF_HUB_OFFLINE=1 timeout 480 "$PY" benchmarks/gpu_check.py --device cuda --init "${INIT:-medium}" \
  --steps "${STEPS:-60}" --batch-size "${BATCH:-32}"
