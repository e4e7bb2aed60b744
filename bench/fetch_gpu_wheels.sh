#!/usr/bin/env bash
# Fetch, where PyPI is reachable, the wheels bench/gpu_check.sh installs offline on the GPU machine (issue 26):
# Python 3.12 / manylinux x86_64, everything bench/gpu_requirements.txt needs beyond the GPU image's own torch
# 2.11.0 and accelerate 1.15.0 and what they pull in. Writes bench/wheels/gpu-wheels.tar.xz (ignored by git): the
# wheels re-zipped uncompressed inside one xz archive, so they fit the 64 MiB that may travel with the checkout
# (pyarrow alone is 43 MB as a wheel). About 2-4 minutes. Needs python3.12 or PYTHON pointing at one (for pip).
#   bash bench/fetch_gpu_wheels.sh && ls -l bench/wheels
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.12}"
OUT=bench/wheels
LIMIT_MIB=64
IMAGE=(torch==2.11.0 accelerate==1.15.0)
# Resolved as dependencies but never imported on the check's path (the preflight and the --tiny test prove it):
# tensorboard's server side, CLI and rendering extras. Leaving them out keeps the archive under the limit.
EXCLUDE="grpcio tensorboard-data-server pillow pygments rich typer shellingham markdown-it-py mdurl annotated-doc
markdown werkzeug"
# glibc 2.35 (Ubuntu 22.04) and older: every manylinux tag such an image accepts.
TARGET=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux2014_x86_64
        --platform manylinux1_x86_64)
for minor in $(seq 5 35); do TARGET+=(--platform "manylinux_2_${minor}_x86_64"); done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip_() { PIP_CONFIG_FILE=/dev/null "$PYTHON" -m pip --disable-pip-version-check "$@"; }
# Resolve (metadata only, torch's 530 MB wheel is not downloaded) the image alone, then the image with our needs.
pip_ install -q --dry-run --ignore-installed --target "$work/t" "${TARGET[@]}" --report "$work/image.json" "${IMAGE[@]}"
pip_ install -q --dry-run --ignore-installed --target "$work/t" "${TARGET[@]}" --report "$work/all.json" \
    -r bench/gpu_requirements.txt "${IMAGE[@]}"
"$PYTHON" - "$work" "$EXCLUDE" > "$work/carry.txt" <<'PY'
import json, re, sys
work, exclude = sys.argv[1], {re.sub("[-_.]+", "-", n.lower()) for n in sys.argv[2].split()}
def pins(name):
    report = json.load(open(f"{work}/{name}.json"))
    return {re.sub("[-_.]+", "-", i["metadata"]["name"].lower()): i["metadata"]["version"] for i in report["install"]}
image, wanted = pins("image"), pins("all")
for name, version in sorted(wanted.items()):
    if image.get(name) != version and name not in exclude:  # new, or another version than the image's
        print(f"{name}=={version}")
PY
echo "carrying $(wc -l < "$work/carry.txt") packages beyond the image: $(tr '\n' ' ' < "$work/carry.txt")"
pip_ download -q --no-deps "${TARGET[@]}" -d "$work/wheels" -r "$work/carry.txt"
"$PYTHON" - "$work/wheels" "$work/stored" <<'PY'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
dst.mkdir()
for wheel in sorted(src.glob("*.whl")):  # uncompressed zips: xz then compresses the files themselves
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(dst / wheel.name, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info), compress_type=zipfile.ZIP_STORED)
PY
mkdir -p "$OUT"
tar -C "$work/stored" -cf - . | xz -T0 -1 > "$OUT/gpu-wheels.tar.xz.part"
mv "$OUT/gpu-wheels.tar.xz.part" "$OUT/gpu-wheels.tar.xz"
size=$(stat -c %s "$OUT/gpu-wheels.tar.xz")
echo "$OUT/gpu-wheels.tar.xz: $(( size / 1048576 )) MiB ($(ls "$work/wheels" | wc -l) wheels, $(du -sm "$work/wheels" | cut -f1) MB as downloaded)"
if (( size > LIMIT_MIB * 1048576 )); then
    echo "over the ${LIMIT_MIB} MiB that travel with the checkout: leave out more (EXCLUDE) or older pins" >&2
    exit 1
fi
