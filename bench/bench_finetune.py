"""Fine-tuning speed: tsm's trainer vs. `Chronos2Pipeline.fit`, same checkpoint, data and settings, in one run.

Both fully fine-tune the same saved checkpoint (2 layers, d_model 256, dropout 0.1) on the same 2,000 series:
batch 32, context 512, prediction 64, min_past 64, lr 1e-5, linear schedule, no warmup, weight decay 0,
grad-norm clip 1.0, fused AdamW, fp32 on CPU. tsm reads the series from an Arrow corpus, fit from memory.

Both are timed the same way: a global forward pre-hook stamps each forward of the Chronos2Model (one per
optimizer step in both), and steps/s is taken over 10-step windows after a warm-up window, so each figure
covers the whole step (data, forward, backward, clip, optimizer, scheduler, logging). Rounds are
interleaved, alternating which contender goes first. Also printed: the same rate per second of this
process's CPU time (close to wall x threads on an idle machine, and steady on a shared one with --threads 1), and the
wall time of a whole call (loading the checkpoint, setup, the steps and the final save), the cost of a short
fine-tuning job.
On a machine other jobs share, use --threads 1: two torch threads on two busy cores spin on each other and a
step can slow 10-20x within a round (seen here), one thread only slows by the share of the core it gets.
Usage: python bench/bench_finetune.py [--steps 60] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from chronos.chronos2 import Chronos2Model

from tsm.config import ModelArchConfig, load_config
from tsm.model import build_model

ARCH = ModelArchConfig(d_model=256, d_kv=64, d_ff=512, num_layers=2, num_heads=4, dropout_rate=0.1,
                       max_output_patches=8)
BATCH, CONTEXT, PREDICTION, MIN_PAST, LR, WINDOW = 32, 512, 64, 64, 1e-5, 10
TEST_CONFIG = Path(__file__).resolve().parents[1] / "config/training/chronos2-test.yaml"


class ForwardStamps:
    """Wall and process CPU time at the start of every Chronos2Model forward while active."""

    def __init__(self):
        self.stamps: list[float] = []
        self.cpu_stamps: list[float] = []

    def __enter__(self) -> ForwardStamps:
        def stamp(module, args):
            if isinstance(module, Chronos2Model):
                self.stamps.append(time.perf_counter())
                self.cpu_stamps.append(time.process_time())

        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(stamp)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def window_rates(self, cpu: bool = False) -> list[float]:
        """Steps per second (of wall or of CPU time) over consecutive WINDOW-step windows, dropping the first
        (warm-up) window."""
        s = self.cpu_stamps if cpu else self.stamps
        return [WINDOW / (s[i + WINDOW] - s[i]) for i in range(0, len(s) - WINDOW, WINDOW)][1:]


@dataclass
class Run:
    rates: list[float]  # steps per wall second, one per window
    cpu_rates: list[float]  # steps per second of this process's CPU time, one per window
    wall: float  # the whole call
    setup: float  # call start to the first forward


def measured(call, steps: int) -> Run:
    started = time.perf_counter()
    with ForwardStamps() as stamps:
        call()
    wall = time.perf_counter() - started
    assert len(stamps.stamps) == steps, len(stamps.stamps)  # one forward per optimizer step
    return Run(stamps.window_rates(), stamps.window_rates(cpu=True), wall, stamps.stamps[0] - started)


def run_fit(series: list[np.ndarray], checkpoint: Path, steps: int, out: Path) -> Run:
    from chronos import Chronos2Pipeline

    def call():
        pipeline = Chronos2Pipeline.from_pretrained(checkpoint)
        pipeline.fit(series, prediction_length=PREDICTION, context_length=CONTEXT, min_past=MIN_PAST,
                     batch_size=BATCH, num_steps=steps, learning_rate=LR, output_dir=out,
                     remove_printer_callback=True, disable_tqdm=True)

    return measured(call, steps)


def run_tsm(corpus: Path, checkpoint: Path, steps: int, out: Path) -> Run:
    from tsm.train.loop import train

    cfg = load_config(TEST_CONFIG, {
        "random_init": False, "model_id": str(checkpoint), "model": ARCH.model_dump(),
        "training_data_paths": [str(corpus)], "probability": None, "output_dir": str(out),
        "context_length": CONTEXT, "prediction_length": PREDICTION, "min_past": MIN_PAST,
        "per_device_train_batch_size": BATCH, "max_steps": steps, "learning_rate": LR,
        "lr_scheduler_type": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "mixed_precision": "no", "log_steps": WINDOW, "save_steps": 10 * steps})
    run = measured(lambda: train(cfg), steps)
    logging.getLogger("tsm").setLevel(logging.WARNING)  # train() set it to INFO
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    logging.getLogger("tsm").setLevel(logging.WARNING)
    rng = np.random.default_rng(0)
    series = [np.cumsum(rng.normal(size=rng.integers(600, 2000))).astype(np.float32) for _ in range(2000)]
    runs: dict[str, list[Run]] = {"tsm": [], "fit": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        datasets.Dataset.from_dict({"target": series}).save_to_disk(str(corpus))
        torch.manual_seed(0)
        checkpoint = work / "checkpoint"
        build_model(ARCH, CONTEXT).save_pretrained(checkpoint)
        contenders = {
            "tsm": lambda out: run_tsm(corpus, checkpoint, args.steps, out),
            "fit": lambda out: run_fit(series, checkpoint, args.steps, out),
        }
        for r in range(args.rounds):
            for name in (["tsm", "fit"] if r % 2 == 0 else ["fit", "tsm"]):
                run = contenders[name](work / f"round{r}" / name)
                runs[name].append(run)
                print(f"round {r} {name}: windows {' '.join(f'{x:.3f}' for x in run.rates)} steps/s "
                      f"(CPU time: {' '.join(f'{x:.3f}' for x in run.cpu_rates)}), setup {run.setup:.1f} s, "
                      f"whole call {run.wall:.1f} s", flush=True)

    def windows(name: str, field: str) -> list[float]:
        return [rate for run in runs[name] for rate in getattr(run, field)]

    rate = {name: statistics.median(windows(name, "rates")) for name in runs}
    cpu_rate = {name: statistics.median(windows(name, "cpu_rates")) for name in runs}
    wall = {name: statistics.median(run.wall for run in runs[name]) for name in runs}
    print(f"CPU, {torch.get_num_threads()} threads, {args.steps} steps x {args.rounds} rounds, batch {BATCH}, "
          f"context {CONTEXT}, prediction {PREDICTION}")
    for name in runs:
        print(f"{name:4s}: {rate[name]:.3f} steps/s ({1 / rate[name]:.3f} s/step), median of "
              f"{len(windows(name, 'rates'))} windows; {1 / cpu_rate[name]:.3f} CPU s/step; "
              f"whole call {wall[name]:.1f} s (median of {len(runs[name])})")
    print(f"tsm / fit = {rate['tsm'] / rate['fit']:.3f}x steps/s")
    print(f"tsm / fit = {cpu_rate['tsm'] / cpu_rate['fit']:.3f}x steps per CPU second (less sensitive to other "
          "jobs on the machine)")
    print(f"tsm / fit = {wall['fit'] / wall['tsm']:.3f}x whole-call speed ({args.steps} steps incl. setup and "
          "final save)")


if __name__ == "__main__":
    main()
