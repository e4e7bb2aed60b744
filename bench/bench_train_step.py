"""Training step: tsm's trainer vs. `Chronos2Pipeline.fit` vs. a bare forward+backward+AdamW step.

Same tiny model (2 layers, d_model 256), batch 32, context 512, prediction 64, CPU, same data.
Each contender's steps/s is the median over 10-step windows after a warm-up window; rounds are
interleaved so machine noise hits all three alike. Prints ratios against `fit` and the bare step.
Usage: python bench/bench_train_step.py [--steps 60] [--rounds 3]
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
from transformers import TrainerCallback

from tsm.config import ModelArchConfig, load_config
from tsm.data.arrow import ArrowCorpus
from tsm.data.batches import TrainingBatches
from tsm.model import build_model

ARCH = ModelArchConfig(d_model=256, d_kv=64, d_ff=512, num_layers=2, num_heads=4, dropout_rate=0.1,
                       max_output_patches=8)
BATCH, CONTEXT, PREDICTION, WINDOW = 32, 512, 64, 10


def window_rates(stamps: list[float]) -> list[float]:
    """Steps/s over consecutive WINDOW-step windows, dropping the first (warm-up) window."""
    rates = [WINDOW / (stamps[i + WINDOW] - stamps[i]) for i in range(0, len(stamps) - WINDOW, WINDOW)]
    return rates[1:]


def bare(series: list[np.ndarray], corpus: Path, steps: int, fused: bool) -> list[float]:
    torch.manual_seed(0)
    model = build_model(ARCH, CONTEXT).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    batches = TrainingBatches([ArrowCorpus(corpus)], [1.0], context_length=CONTEXT, prediction_length=PREDICTION,
                              min_past=64, batch_size=BATCH, output_patch_size=16, seed=0)
    prepared = [batches.batch(i) for i in range(steps)]  # built beforehand: the bare step reads no data
    stamps = [time.perf_counter()]
    for batch in prepared:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return window_rates(stamps)


class _Stamps(TrainerCallback):
    def __init__(self):
        self.stamps: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.stamps:
            self.stamps.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())


def fit(series: list[np.ndarray], corpus: Path, steps: int, workdir: Path) -> list[float]:
    from chronos import Chronos2Pipeline

    torch.manual_seed(0)
    pipeline = Chronos2Pipeline(build_model(ARCH, CONTEXT))
    stamps = _Stamps()
    pipeline.fit(series, prediction_length=PREDICTION, context_length=CONTEXT, batch_size=BATCH, num_steps=steps,
                 learning_rate=1e-4, min_past=64, output_dir=workdir / "fit", callbacks=[stamps],
                 remove_printer_callback=True, disable_tqdm=True, logging_steps=10_000)
    return window_rates(stamps.stamps)


def tsm_trainer(series: list[np.ndarray], corpus: Path, steps: int, workdir: Path) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tsm.train.loop import train

    out = workdir / "tsm"
    cfg = load_config(Path(__file__).resolve().parents[1] / "config/training/chronos2-test.yaml", {
        "training_data_paths": [str(corpus)], "probability": None, "output_dir": str(out), "max_steps": steps,
        "per_device_train_batch_size": BATCH, "context_length": CONTEXT, "prediction_length": PREDICTION,
        "min_past": 64, "log_steps": WINDOW, "save_steps": 10 * steps, "model": ARCH.model_dump(),
        "weight_decay": 0.0, "learning_rate": 1e-4})
    train(cfg)
    scalars = EventAccumulator(str(out / "tensorboard")).Reload().Scalars("perf/steps_per_s")
    return [s.value for s in scalars][1:]  # the trainer's own per-window figure, minus warm-up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    datasets.disable_progress_bars()
    logging.getLogger("tsm").setLevel(logging.WARNING)
    rng = np.random.default_rng(0)
    series = [np.cumsum(rng.normal(size=rng.integers(600, 2000))).astype(np.float32) for _ in range(2000)]
    # bare: the same fused AdamW tsm uses (the loop's own overhead); bare_foreach: torch's default AdamW.
    results: dict[str, list[float]] = {"bare": [], "bare_foreach": [], "tsm": [], "fit": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        datasets.Dataset.from_dict({"target": series}).save_to_disk(str(corpus))
        for r in range(args.rounds):
            round_dir = work / f"round{r}"
            results["bare"] += bare(series, corpus, args.steps, fused=True)
            results["bare_foreach"] += bare(series, corpus, args.steps, fused=False)
            results["tsm"] += tsm_trainer(series, corpus, args.steps, round_dir)
            results["fit"] += fit(series, corpus, args.steps, round_dir)
            logging.getLogger("tsm").setLevel(logging.WARNING)
    med = {k: statistics.median(v) for k, v in results.items()}
    for name, value in med.items():
        print(f"{name:12s}: {value:.3f} steps/s ({1 / value:.3f} s/step), median of {len(results[name])} windows")
    print(f"tsm / fit  = {med['tsm'] / med['fit']:.3f}x steps/s")
    overhead = 100 * (1 - med["tsm"] / med["bare"])
    print(f"tsm / bare = {med['tsm'] / med['bare']:.3f}x steps/s (loop overhead {overhead:.1f}%)")
    print(f"tsm / bare_foreach = {med['tsm'] / med['bare_foreach']:.3f}x steps/s")


if __name__ == "__main__":
    main()
