"""Monitoring cost: the trainer's steps/s with the full monitor vs. with monitoring off, as a ratio in one run.

Config: `config/training/chronos2-test.yaml` (2 layers, d_model 256, context 512, batch 16) on a synthetic
random-walk corpus, with its own log_steps (10) and a health report every `--block` (10) steps, 50x the
default rate of one per 500, so every monitored block holds a per-step line and a boxed report: a pessimistic
setting. Checkpoints are pushed past max_steps. What "off" means, by mode:

- `--mode blocks` (default): ONE training run whose monitor alternates blocks of `--block` steps between the
  real monitor and a no-op (on_step returns at once). Adjacent on/off blocks form a pair; the figure is the
  median of the pairs' steps/s ratios. Pairing blocks a few seconds apart cancels the drift of a machine
  shared with other jobs, which whole runs minutes apart do not.
- `--mode runs`: whole runs, interleaved (on/off, off/on, ...): the real monitor vs. a no-op subclass of
  TrainingMonitor (no reduction, no logging, no TensorBoard writer); the median of the per-round ratios.

Both modes also print the direct cost: time spent inside the real `on_step` (flushes, reports, TensorBoard and
the reduction's device sync included) as a share of the run time.
Torch runs on `--threads` (default 1): this machine's 2 cores are shared with other jobs, and a 2-thread step
that loses a core to one of them stalls (step times swung 0.08-3 s), which buries a 2% effect.
Usage: python bench/bench_monitor.py [--mode blocks|runs] [--block 10] [--pairs 24] [--threads 1] [--steps 60]
       [--rounds 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import torch

import tsm.train.loop as loop
from tsm.config import load_config
from tsm.train.monitor import TrainingMonitor

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "training" / "chronos2-test.yaml"


class TimedMonitor(TrainingMonitor):
    """The real monitor, also recording when each step ended and how long on_step itself took."""

    stamps: list[float]
    inside_s: float

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stamps, self.inside_s = [], 0.0

    def on_step(self, step, loss, grad_norm, lr, samples, data_wait_s=0.0, tokens=(0, 0)):
        started = time.perf_counter()
        self.stamps.append(started)
        super().on_step(step, loss, grad_norm, lr, samples, data_wait_s, tokens)
        self.inside_s += time.perf_counter() - started


class NoOpMonitor(TimedMonitor):
    """Monitoring off: the same timestamps, nothing else (no writer, no reduction, no log line)."""

    def __init__(self, *args, **kwargs):
        self.stamps, self.inside_s = [], 0.0

    def on_step(self, step, loss, grad_norm, lr, samples, data_wait_s=0.0, tokens=(0, 0)):
        self.stamps.append(time.perf_counter())

    def before_step(self, step):
        pass

    def on_benchmark(self, step, scores):
        pass

    def finish(self, final_model):
        pass

    def close(self):
        pass


class BlockMonitor(TimedMonitor):
    """The real monitor in even blocks of `block` steps, a no-op in odd ones (same timestamps in both)."""

    block = 10

    def on_step(self, step, loss, grad_norm, lr, samples, data_wait_s=0.0, tokens=(0, 0)):
        if ((step - 1) // self.block) % 2 == 0:
            super().on_step(step, loss, grad_norm, lr, samples, data_wait_s, tokens)
        else:
            self.stamps.append(time.perf_counter())


def make_corpus(path: Path, n: int = 2000) -> Path:
    rng = np.random.default_rng(0)
    rows = [np.cumsum(rng.normal(size=rng.integers(600, 1201))).astype("float32") + 100 for _ in range(n)]
    datasets.disable_progress_bars()
    datasets.Dataset.from_dict({"target": rows}).save_to_disk(str(path))
    return path


def train_recording(cfg, monitor_cls: type[TrainingMonitor]) -> TrainingMonitor:
    """Train `cfg` with the loop's monitor built as `monitor_cls`; the monitor it built, for its records."""
    made: list[TrainingMonitor] = []

    def factory(*args, **kwargs):
        made.append(monitor_cls(*args, **kwargs))
        return made[-1]

    loop.TrainingMonitor = factory  # the loop builds its monitor by this name
    try:
        loop.train(cfg)
    finally:
        loop.TrainingMonitor = TrainingMonitor
        logging.getLogger("tsm").handlers.clear()  # keep the bench's own output readable
    return made[0]


def train_with(monitor_cls: type[TimedMonitor], corpus: Path, out: Path, steps: int, health: int = 10) -> TimedMonitor:
    cfg = load_config(TEST_CONFIG, {
        "training_data_paths": [str(corpus)], "output_dir": str(out), "max_steps": steps,
        "save_steps": steps * 10, "monitoring.health_report_interval": health,
    })
    return train_recording(cfg, monitor_cls)


def run_once(monitor_cls: type[TimedMonitor], corpus: Path, out: Path, steps: int, warmup: int) -> tuple[float, float]:
    """(steps/s after warm-up, share of that time spent inside on_step)."""
    monitor = train_with(monitor_cls, corpus, out, steps)
    stamps = monitor.stamps[warmup:]
    seconds = stamps[-1] - stamps[0]
    return (len(stamps) - 1) / seconds, monitor.inside_s / (monitor.stamps[-1] - monitor.stamps[0])


def block_mode(corpus: Path, out: Path, block: int, pairs: int) -> None:
    """Step k's interval (stamp k -> stamp k+1) holds on_step(k)'s own work, so it belongs to step k's block.
    The first pair is warm-up and dropped."""
    BlockMonitor.block = block
    monitor = train_with(BlockMonitor, corpus, out, 2 * block * (pairs + 1) + 1, health=block)
    d = np.diff(monitor.stamps)  # d[i]: interval after step i + 1
    ratios = []
    for p in range(1, pairs + 1):
        on = d[2 * p * block:(2 * p + 1) * block].sum()
        off = d[(2 * p + 1) * block:(2 * p + 2) * block].sum()
        ratios.append(off / on)  # steps/s on / steps/s off, for equal step counts
        print(f"pair {p}: on {block / on:.3f} stp/s  off {block / off:.3f} stp/s  ratio {ratios[-1]:.4f}", flush=True)
    median = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(f"\nratio on/off: {median:.4f} (median of {pairs} interleaved block pairs of {block} steps, one run; "
          f"quartiles {q1:.4f}..{q3:.4f}); overhead {1 - median:+.2%} (target < 2%)")
    on_steps = np.concatenate([d[2 * p * block:(2 * p + 1) * block] for p in range(1, pairs + 1)])
    off_steps = np.concatenate([d[(2 * p + 1) * block:(2 * p + 2) * block] for p in range(1, pairs + 1)])
    # Medians of single steps shrug off other jobs' bursts that swamp whole blocks on a shared machine; the
    # flush steps they leave out are covered exactly by the direct cost below.
    on_ms, off_ms = float(np.median(on_steps)) * 1000, float(np.median(off_steps)) * 1000
    print(f"median step time: on {on_ms:.2f} ms, off {off_ms:.2f} ms; steps/s ratio on/off {off_ms / on_ms:.4f}")
    print(f"direct cost: {monitor.inside_s / on_steps.sum():.3%} of the monitored blocks' time spent inside on_step "
          "(log lines, health reports, TensorBoard, the reduction's device sync)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--mode", choices=("blocks", "runs"), default="blocks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--block", type=int, default=10, help="a multiple of log_steps (10)")
    parser.add_argument("--pairs", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = make_corpus(Path(tmp) / "corpus")
        if args.mode == "blocks":
            block_mode(corpus, Path(tmp) / "blocks", args.block, args.pairs)
            return
        rates: dict[str, list[float]] = {"on": [], "off": []}
        ratios: list[float] = []
        inside: list[float] = []
        for r in range(args.rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            got = {}
            for name in order:
                cls = TimedMonitor if name == "on" else NoOpMonitor
                got[name], share = run_once(cls, corpus, Path(tmp) / f"{name}-{r}", args.steps, args.warmup)
                rates[name].append(got[name])
                if name == "on":
                    inside.append(share)
            ratios.append(got["on"] / got["off"])
            print(f"round {r + 1}: on {got['on']:.3f} stp/s  off {got['off']:.3f} stp/s  ratio {ratios[-1]:.4f}",
                  flush=True)
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    print(f"\nmonitoring on:  {on:.3f} steps/s (median of {args.rounds})")
    print(f"monitoring off: {off:.3f} steps/s (no-op monitor subclass)")
    print(f"ratio on/off: {on / off:.4f} (median of per-round ratios {statistics.median(ratios):.4f}); "
          f"overhead {1 - statistics.median(ratios):+.2%} (target < 2%)")
    print(f"direct cost: {statistics.median(inside):.3%} of run time spent inside on_step "
          "(log lines, health reports, TensorBoard, the reduction's device sync)")


if __name__ == "__main__":
    main()
