#!/usr/bin/env bash
# GPU check (issue 13): the real training loop on the base configs, stage 1 (2048) then stage 2 (8192), on one
# GPU: samples/s, tokens/s, peak memory, padding, MFU over all and over useful tokens, host syncs per step.
# About 6 minutes on one H100/H200 (corpus ~30 s, each stage's compile 1-2 min, 60 steps each).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONUNBUFFERED=1 timeout "${TIMEOUT:-560}" python bench/gpu_check.py --steps "${STEPS:-60}" "$@"
