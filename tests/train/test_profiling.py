"""profile_steps on CPU: a torch.profiler trace of exactly the window's steps, marked with their training step
numbers, as a Chrome trace that Perfetto and TensorBoard's profiler plugin read; from a real run too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tsm.layout import PROFILE
from tsm.train.profiling import StepProfiler, trace_name


def marked_steps(trace: Path) -> list[int]:
    events = json.loads(trace.read_text())["traceEvents"]
    return sorted({int(m.group(1)) for e in events if (m := re.fullmatch(r"ProfilerStep#(\d+)", e.get("name", "")))})


def run_steps(profiler: StepProfiler, steps: range) -> None:
    weight = torch.randn(64, 64, requires_grad=True)
    for step in steps:
        profiler.before_step(step)
        (torch.randn(32, 64) @ weight).square().sum().backward()
        profiler.after_step(step)


def test_the_trace_holds_exactly_the_window_steps(tmp_path):
    profiler = StepProfiler([3, 5], tmp_path, rank=0, device=torch.device("cpu"))
    run_steps(profiler, range(1, 9))
    trace = tmp_path / PROFILE / "steps-3-5" / trace_name(0)
    assert marked_steps(trace) == [3, 4, 5]
    names = {e.get("name") for e in json.loads(trace.read_text())["traceEvents"]}
    assert "aten::mm" in names  # the steps' own operators are in it
    assert not profiler.active and [p.name for p in (tmp_path / PROFILE).iterdir()] == ["steps-3-5"]


def test_a_leg_resumed_inside_the_window_profiles_its_steps_and_one_ending_inside_writes_what_it_has(tmp_path):
    resumed = StepProfiler([3, 6], tmp_path / "resumed", rank=1, device=torch.device("cpu"))
    run_steps(resumed, range(5, 9))  # resumed from checkpoint-4
    assert marked_steps(tmp_path / "resumed" / PROFILE / "steps-5-6" / trace_name(1)) == [5, 6]
    cut = StepProfiler([3, 6], tmp_path / "cut", rank=0, device=torch.device("cpu"))
    run_steps(cut, range(1, 5))  # max_steps 4
    cut.finish()  # the monitor's close
    assert marked_steps(tmp_path / "cut" / PROFILE / "steps-3-4" / trace_name(0)) == [3, 4]
    after = StepProfiler([3, 6], tmp_path / "after", rank=0, device=torch.device("cpu"))
    run_steps(after, range(7, 9))
    after.finish()
    assert not (tmp_path / "after" / PROFILE).exists()


def test_off_by_default(tmp_path):
    profiler = StepProfiler(None, tmp_path, rank=0, device=torch.device("cpu"))
    run_steps(profiler, range(1, 4))
    profiler.finish()
    assert not (tmp_path / PROFILE).exists()


@pytest.mark.e2e
def test_a_real_run_writes_the_trace_under_the_run_folder(tmp_path, corpus):
    from tests.conftest import tiny_config
    from tsm.train.loop import train

    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=4, save_steps=4, profile_steps=[2, 3]))
    trace = out / PROFILE / "steps-2-3" / trace_name(0)
    assert marked_steps(trace) == [2, 3]
    names = {e.get("name") for e in json.loads(trace.read_text())["traceEvents"]}
    assert any(name.startswith("aten::scaled_dot_product_attention") for name in names if name)
    assert "Profile of steps 2-3 written to" in (out / "training.log").read_text()
