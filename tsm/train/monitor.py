"""What a person watching a run sees: the per-step log line, `training.log` and TensorBoard scalars.

Only rank 0 writes. Losses stay on the device between log steps, so the loop does not synchronise
with the GPU every step.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path

import psutil
import torch

from tsm.config import TrainConfig
from tsm.data.batches import CorpusStats

logger = logging.getLogger("tsm")


def setup_logging(output_dir: Path, is_main: bool) -> None:
    """Rank 0 logs INFO to stderr and `training.log`; other ranks only warnings."""
    root = logging.getLogger("tsm")
    root.handlers.clear()
    root.propagate = False
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(output_dir / "training.log")
        file.setFormatter(fmt)
        root.addHandler(file)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s" if m else f"{s}s"


def memory_text(device: torch.device) -> str:
    if device.type == "cuda":
        used = torch.cuda.max_memory_allocated(device) / 2**30
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        return f"{used:.1f}/{total:.0f}GB"
    return f"{psutil.Process(os.getpid()).memory_info().rss / 2**30:.2f}GB rss"


class TrainingMonitor:
    def __init__(self, accelerator, output_dir: Path, cfg: TrainConfig, data_stats: list[CorpusStats]):
        self.accelerator = accelerator
        self.max_steps = cfg.max_steps
        self.log_steps = cfg.log_steps
        self.settings = cfg.monitoring
        self.data_stats = data_stats
        self.writer = None
        if accelerator.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
            self.writer.add_text("config", "```yaml\n" + cfg.to_yaml() + "\n```", 0)
        self._losses: list[torch.Tensor] = []
        self._samples = 0
        self._window_start = time.perf_counter()
        self._window_steps = 0
        self.best_loss = math.inf

    def on_step(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor, lr: float, samples: int,
                data_wait_s: float = 0.0) -> None:
        self._losses.append(loss)
        self._samples += samples
        self._window_steps += 1
        if step % self.log_steps and step != self.max_steps:
            return
        # One reduction over ranks per log interval: mean loss, last grad norm, total samples.
        stats = torch.stack([torch.stack(self._losses).mean(), grad_norm.detach().float(),
                             torch.tensor(float(self._samples), device=loss.device)])
        stats = self.accelerator.reduce(stats, reduction="sum")
        world = self.accelerator.num_processes
        loss_value, gnorm, samples_global = stats[0].item() / world, stats[1].item() / world, stats[2].item()
        elapsed = time.perf_counter() - self._window_start
        steps_per_s = self._window_steps / elapsed
        samples_per_s = samples_global / elapsed
        eta = (self.max_steps - step) / steps_per_s if steps_per_s > 0 else math.inf
        self.best_loss = min(self.best_loss, loss_value)
        logger.info(
            "Step %s/%s | loss=%.4f | best=%.4f | lr=%.2e | mem=%s | %.2f stp/s | %.0f smp/s | eta=%s | gnorm=%.3f",
            f"{step:,}", f"{self.max_steps:,}", loss_value, self.best_loss, lr,
            memory_text(loss.device), steps_per_s, samples_per_s, format_duration(eta), gnorm,
        )
        if self.writer is not None:
            for name, value in (("train/loss", loss_value), ("train/lr", lr), ("grad/norm", gnorm),
                                ("perf/steps_per_s", steps_per_s), ("perf/samples_per_s", samples_per_s)):
                self.writer.add_scalar(name, value, step)
        self._losses.clear()
        self._samples = 0
        self._window_steps = 0
        self._window_start = time.perf_counter()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
