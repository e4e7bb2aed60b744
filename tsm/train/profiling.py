"""`profile_steps: [start, stop]`: a torch.profiler trace of those optimizer steps, and where CUDA trains, a memory
snapshot of them, under the run folder's `profile/steps-{start}-{stop}/`:

- `rank{r}.pt.trace.json`: a Chrome trace, each step marked `ProfilerStep#{step}` (its training step number).
  Open it in https://ui.perfetto.dev or chrome://tracing, or `tensorboard --logdir RUN/profile` with the
  `torch-tb-profiler` plugin (it reads `*.pt.trace.json`).
- `rank{r}.memory-snapshot.pickle` (CUDA only): every allocation of those steps with its stack; drag it onto
  https://pytorch.org/memory_viz.

Every rank profiles its own steps (a straggler shows in its own file). A leg that resumes inside the window
profiles the steps it runs; one that ends inside it (max_steps, preemption at close) writes what it recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tsm.layout import PROFILE

logger = logging.getLogger("tsm")

__all__ = ["StepProfiler", "trace_name", "memory_snapshot_name"]


def trace_name(rank: int) -> str:
    return f"rank{rank}.pt.trace.json"


def memory_snapshot_name(rank: int) -> str:
    return f"rank{rank}.memory-snapshot.pickle"


class StepProfiler:
    """Started by the monitor before step `start` and stopped after step `stop` (or at close)."""

    def __init__(self, window: list[int] | None, output_dir: Path, rank: int, device: torch.device):
        self.window = tuple(window) if window else None
        self.output_dir = Path(output_dir)
        self.rank = rank
        self.cuda = device.type == "cuda"
        self.profiler: torch.profiler.profile | None = None
        self.first_step: int | None = None
        self.last_step: int | None = None
        self.written: Path | None = None  # the folder of the finished trace

    @property
    def active(self) -> bool:
        return self.profiler is not None

    def before_step(self, step: int) -> None:
        """Start recording when `step` is in the window and nothing was recorded yet in this leg."""
        if self.active:
            self.profiler.step()  # closes the previous ProfilerStep# mark and opens this step's
            return
        if self.window is None or self.written is not None:
            return
        start, stop = self.window
        if not start <= step <= stop:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
            # The memory snapshot's API (documented at pytorch.org/docs/stable/torch_cuda_memory.html) is
            # underscored in torch itself; it records every allocation with its Python and C++ stack.
            torch.cuda.memory._record_memory_history(max_entries=1_000_000)
        # A schedule that always records: with one, torch marks each step (ProfilerStep#N) in the trace.
        self.profiler = torch.profiler.profile(activities=activities, record_shapes=True, profile_memory=True,
                                               schedule=_always_record)
        self.profiler.step_num = step  # the trace's ProfilerStep#N marks carry the training step numbers
        self.profiler.start()
        self.first_step = step
        logger.info("Profiling steps %d-%d (profile_steps)", step, stop)

    def after_step(self, step: int) -> bool:
        """After `step`; after the window's last step the trace is written. True when it was."""
        if not self.active:
            return False
        self.last_step = step
        if step >= self.window[1]:
            self.finish()
            return True
        return False

    def finish(self) -> None:
        """Stop and write what was recorded (the end of the window, or of a leg that ends inside it)."""
        if not self.active:
            return
        profiler, self.profiler = self.profiler, None
        profiler.stop()
        last = self.last_step if self.last_step is not None else self.first_step
        folder = self.output_dir / PROFILE / f"steps-{self.first_step}-{last}"
        folder.mkdir(parents=True, exist_ok=True)
        trace = folder / trace_name(self.rank)
        profiler.export_chrome_trace(str(trace))
        if self.cuda:
            torch.cuda.memory._dump_snapshot(str(folder / memory_snapshot_name(self.rank)))
            torch.cuda.memory._record_memory_history(enabled=None)
        self.written = folder
        logger.info("Profile of steps %d-%d written to %s (open the trace in ui.perfetto.dev%s)", self.first_step,
                    last, folder, "; the memory snapshot in pytorch.org/memory_viz" if self.cuda else "")


def _always_record(step_num: int) -> torch.profiler.ProfilerAction:
    return torch.profiler.ProfilerAction.RECORD
