"""Issue 26, readings 1 and 2: bench/gpu_check.sh from a clean checkout on a Python that holds only the GPU
image's packages (torch 2.11.0, accelerate 1.15.0 and what they pull in) plus the carried wheels, installed
offline: the preflight passes and a --tiny run prints its table.

Needs TSM_TORCH211_PYTHON (a Python 3.12 with `pip install torch==2.11.0 accelerate==1.15.0`, nothing else) and
bench/wheels/gpu-wheels.tar.xz from bench/fetch_gpu_wheels.sh (README, "First GPU run")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bench" / "wheels" / "gpu-wheels.tar.xz"


@pytest.mark.e2e
@pytest.mark.skipif(not os.environ.get("TSM_TORCH211_PYTHON") or not BUNDLE.is_file(),
                    reason="TSM_TORCH211_PYTHON and bench/wheels/gpu-wheels.tar.xz (bench/fetch_gpu_wheels.sh)")
def test_the_gpu_check_runs_from_a_clean_checkout_with_the_image_packages_and_the_wheels(tmp_path):
    python = os.environ["TSM_TORCH211_PYTHON"]
    image = subprocess.run([python, "-c", "import tsm"], capture_output=True, text=True, cwd=tmp_path)
    assert image.returncode != 0  # the image Python knows no tsm (nor chronos, pydantic, datasets)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive, check=True)
    (checkout / "bench" / "wheels").mkdir()
    shutil.copy(BUNDLE, checkout / "bench" / "wheels")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=python, DEPS=str(tmp_path / "deps"), PIP_NO_INDEX="1", TIMEOUT="900")
    run = subprocess.run(["bash", "bench/gpu_check.sh", "--tiny", "--steps", "20", "--series", "200",
                          "--series-stage2", "60"], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=1500)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "preflight: ok" in run.stdout and "torch 2.11.0" in run.stdout, run.stdout
    assert re.search(r"^\| 2 \| 1024 \| 16 \|", run.stdout, re.M), run.stdout
