"""Issue 26, reading 3: a compiled training step after the loop's TF32 setting. Setting TF32 through the new
`fp32_precision` attributes makes the legacy getters raise, and inductor in torch 2.10/2.11 still calls one when
it autotunes a matmul (pytorch#166387): measured on torch 2.11's CPU build, the step failed. The loop now sets
TF32 through the legacy setters, which both APIs read back.

Runs on this project's torch, and on the GPU image's torch 2.11 where TSM_TORCH211_PYTHON names a Python with it
(README, "First GPU run": a Python 3.12 venv with torch==2.11.0 and accelerate==1.15.0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# A compiled forward + backward with matmul autotuning on (the path that reads the legacy getter), after `setting`;
# inductor's caches off: a cached graph skips the autotuning (measured: the second run passed), the GPU starts cold.
PROBE = """
import sys, torch, torch._inductor.config as inductor_config
setting = sys.argv[1]
if setting == "new-api":
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
else:  # the loop's own function, taken from its source: the torch 2.11 Python may lack tsm's other packages
    import ast, pathlib
    source = pathlib.Path({repo!r}, "tsm/train/loop.py").read_text()
    function = next(node for node in ast.parse(source).body if getattr(node, "name", "") == "enable_tf32")
    exec(compile(ast.Module([function], []), "loop.py", "exec"))
    enable_tf32()
print("reads", torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
try:
    print("legacy", torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)
except RuntimeError:
    print("legacy getter raises")
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 1))
step = torch.compile(lambda x: model(x).sum().backward())
try:
    with inductor_config.patch(max_autotune=True, force_disable_caches=True):
        step(torch.randn(64, 64))
    print("compiled step ok", torch.__version__)
except Exception as exc:
    print("compiled step failed", type(exc).__name__)
"""


def probe(python: str, setting: str) -> str:
    run = subprocess.run([python, "-c", PROBE.format(repo=str(REPO)), setting], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_the_tf32_setting_reads_back_through_both_apis():
    import torch

    from tsm.train.loop import enable_tf32

    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    try:
        enable_tf32()
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"  # the new API, as inductor reads it
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32  # no raise
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


@pytest.mark.e2e
def test_a_step_compiles_after_the_tf32_setting_on_this_torch():
    out = probe(sys.executable, "loop")
    assert "reads tf32 tf32" in out and "legacy high True" in out and "compiled step ok" in out, out


@pytest.mark.e2e
@pytest.mark.skipif(not os.environ.get("TSM_TORCH211_PYTHON"), reason="TSM_TORCH211_PYTHON: a Python with torch 2.11")
def test_a_step_compiles_after_the_tf32_setting_on_torch_2_11():
    python = os.environ["TSM_TORCH211_PYTHON"]
    loop = probe(python, "loop")
    assert "compiled step ok 2.11" in loop, loop
    new_api = probe(python, "new-api")  # the reading: what the loop did before
    assert "legacy getter raises" in new_api and "compiled step failed" in new_api, new_api
