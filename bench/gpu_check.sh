#!/usr/bin/env bash
# GPU check (distributed issue): base config, FSDP2 on one GPU, bf16, +/- activation checkpointing and
# torch.compile. Prints steps/s, samples/s, peak GPU memory and MFU. Finishes in a few minutes on one H100/H200.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PYTHONUNBUFFERED=1 timeout 480 python bench/gpu_check.py --device cuda --batch-size "${BATCH:-64}" --steps "${STEPS:-10}"
