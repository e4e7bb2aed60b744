"""Compiled vs. eager encoder blocks in tsm's own training loop, on the test config (CPU).

The trainer's per-window steps/s (TensorBoard `perf/steps_per_s`, WINDOW steps each) after the warm-up
windows, in which the compiled run builds its kernels; rounds alternate eager and compiled, so machine noise
hits both alike. Prints the medians, their ratio and the compiled run's first-window cost (the build).
On a GPU `torch_compile: auto` compiles; bench/gpu_check.py measures it there.
Usage: python bench/bench_compile.py [--steps 120] [--rounds 3] [--batch-size 32]
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

from tsm.config import load_config

WINDOW = 10
TEST_CONFIG = Path(__file__).resolve().parents[1] / "config/training/chronos2-test.yaml"


def run(corpus: Path, out: Path, steps: int, batch_size: int, compiled: bool) -> tuple[list[float], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tsm.train.loop import train

    cfg = load_config(TEST_CONFIG, {
        "training_data_paths": [str(corpus)], "probability": None, "output_dir": str(out), "max_steps": steps,
        "per_device_train_batch_size": batch_size, "log_steps": WINDOW, "save_steps": 10 * steps,
        "parallelism": {"torch_compile": compiled}})
    started = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - started
    rates = [s.value for s in EventAccumulator(str(out / "tensorboard")).Reload().Scalars("perf/steps_per_s")]
    return rates[2:], seconds  # two warm-up windows: the build, then shapes that turn dynamic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    series = [np.cumsum(rng.normal(size=rng.integers(256, 1536))).astype(np.float32) for _ in range(2000)]
    rates: dict[bool, list[float]] = {False: [], True: []}
    seconds: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        datasets.Dataset.from_dict({"target": series}).save_to_disk(str(corpus))
        for r in range(args.rounds):
            for compiled in (False, True):
                windows, took = run(corpus, Path(tmp) / f"run-{r}-{compiled}", args.steps, args.batch_size, compiled)
                logging.getLogger("tsm").setLevel(logging.WARNING)
                rates[compiled] += windows
                seconds[compiled].append(took)
    eager, compiled = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.steps} steps x {args.rounds} rounds")
    print(f"eager   : {eager:.2f} steps/s (median of {len(rates[False])} windows of {WINDOW})")
    print(f"compiled: {compiled:.2f} steps/s (median of {len(rates[True])} windows of {WINDOW})")
    print(f"compiled / eager = {compiled / eager:.3f}x steps/s")
    print(f"whole runs (build included): eager {statistics.median(seconds[False]):.1f} s, compiled first "
          f"{seconds[True][0]:.1f} s (build), later {statistics.median(seconds[True][1:] or seconds[True]):.1f} s")


if __name__ == "__main__":
    main()
