#!/usr/bin/env bash
# GPU check (issues 13 and 26) on the GPU machine (one H100/H200, Python 3.12, torch 2.11 and accelerate 1.15
# preinstalled, no package index): installs the carried wheels (bench/wheels/gpu-wheels.tar.xz, from
# bench/fetch_gpu_wheels.sh) into a venv over the image's packages, runs the preflight, then the real training
# loop on the base configs, stage 1 (2048) then stage 2 (8192): samples/s, tokens/s, peak memory, padding, MFU
# over all and over useful tokens, compiled graphs, host syncs per step. About 4 minutes (README "First GPU run").
#   bash bench/gpu_check.sh [gpu_check.py options, e.g. --stages 1 --set model.dropout_rate=0]
# PYTHON: the interpreter with torch (default python3); VENV: where the venv goes (default /tmp/tsm-gpu-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-/tmp/tsm-gpu-venv}"
BUNDLE=bench/wheels/gpu-wheels.tar.xz
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [[ -f "$BUNDLE" && ! -x "$VENV/bin/python" ]]; then
    # Over the image's packages (torch stays the image's CUDA build); nothing from an index.
    "$PYTHON" -m venv --system-site-packages "$VENV"
    rm -rf "$VENV/wheels" && mkdir -p "$VENV/wheels"
    "$VENV/bin/python" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" \
        "$BUNDLE" "$VENV/wheels"
    PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-deps \
        "$VENV"/wheels/*.whl
    echo "installed $(ls "$VENV/wheels" | wc -l) wheels into $VENV in $((SECONDS - started)) s"
fi
[[ -x "$VENV/bin/python" ]] && PYTHON="$VENV/bin/python"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" bench/gpu_preflight.py
echo "preflight done at $((SECONDS - started)) s"
timeout -k 30 -s INT "${TIMEOUT:-480}" "$PYTHON" bench/gpu_check.py "$@"
echo "gpu_check done at $((SECONDS - started)) s"
