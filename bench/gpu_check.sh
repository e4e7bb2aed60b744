#!/usr/bin/env bash
# GPU check (issues 13 and 26) on the GPU machine (one H100/H200, Python 3.12, torch 2.11 and accelerate 1.15
# preinstalled, no package index): installs the carried wheels (bench/wheels/gpu-wheels.tar.xz, from
# bench/fetch_gpu_wheels.sh) into a folder ahead of the image's packages, runs the preflight, then the real training
# loop on the base configs, stage 1 (2048) then stage 2 (8192): samples/s, tokens/s, peak memory, padding, MFU
# over all and over useful tokens, compiled graphs, host syncs per step. About 4 minutes (README "First GPU run").
#   bash bench/gpu_check.sh [gpu_check.py options, e.g. --stages 1 --set model.dropout_rate=0]
# PYTHON: the interpreter with torch (default python3); DEPS: where the wheels install (default /tmp/tsm-gpu-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
PYTHON="${PYTHON:-python3}"
DEPS="${DEPS:-/tmp/tsm-gpu-deps}"
BUNDLE=bench/wheels/gpu-wheels.tar.xz
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [[ -f "$BUNDLE" && ! -f "$DEPS/.installed" ]]; then
    # A folder ahead of the image's site-packages on PYTHONPATH (torch stays the image's CUDA build; a system
    # Python refuses pip into its own site-packages); nothing from an index.
    rm -rf "$DEPS" && mkdir -p "$DEPS/wheels"
    "$PYTHON" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" \
        "$BUNDLE" "$DEPS/wheels"
    PIP_CONFIG_FILE=/dev/null "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps \
        --target "$DEPS/site" "$DEPS"/wheels/*.whl
    touch "$DEPS/.installed"
    echo "installed $(ls "$DEPS/wheels" | wc -l) wheels into $DEPS/site in $((SECONDS - started)) s"
fi
export PYTHONPATH="$PWD:$DEPS/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" bench/gpu_preflight.py
echo "preflight done at $((SECONDS - started)) s"
timeout -k 30 -s INT "${TIMEOUT:-480}" "$PYTHON" bench/gpu_check.py "$@"
echo "gpu_check done at $((SECONDS - started)) s"
