"""bench/gpu_check.py, the prepared GPU run of issue 13, kept working on CPU: its FLOP count against torch's own
FLOP counter, and the whole script on the test config."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tsm.model import create_model

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("rows, width, group", [(1, 512, False), (2, 200, False), (3, 512, True)])
def test_the_flop_count_is_torchs_for_a_training_step(rows, width, group):
    """6 x parameters x tokens counts the input gradient of the first layer too, which backward skips (the
    series need no gradient): a few % above torch's count, never more."""
    check = gpu_check()
    cfg = check.base_config(1, True, {"model.dropout_rate": 0.0})
    model = create_model(cfg)
    context = torch.randn(rows, width).cumsum(-1)
    context[0, : width // 3] = float("nan")  # one row left-padded: useful tokens are fewer
    batch = {"context": context, "future_target": torch.randn(rows, 64), "num_output_patches": 4,
             "group_ids": torch.zeros(rows, dtype=torch.long) if group else torch.arange(rows)}
    with FlopCounterMode(display=False) as counted:
        model(**batch).loss.backward()
    ours = check.FlopCounter(model, cfg).step(batch, useful=False)
    if group or rows == 1:  # with one group per series torch also counts the masked-out group attention
        assert 1.0 <= ours / counted.get_total_flops() < 1.05
    assert check.FlopCounter(model, cfg).step(batch, useful=True) < ours


@pytest.mark.e2e
def test_the_gpu_check_runs_the_training_loop_on_cpu(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--steps", "30", "--series", "400"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = re.findall(r"^\| (\d) \| (\d+) \| 16 \| ([\d,]+) \| ([\d,]+) \| ([\d.]+)% \|", run.stdout, re.M)
    assert [(stage, context) for stage, context, *_ in rows] == [("1", "512"), ("2", "1024")], run.stdout
    assert all(float(padding) < 20 for *_, padding in rows)  # length grouping is on in the test config
