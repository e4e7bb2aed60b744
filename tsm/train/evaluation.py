"""Scoring during training: held-out validation and the benchmark, and which of them ranks checkpoints.

Under DDP the datasets are spread over the ranks (each holds the full model), so no rank idles while
another evaluates, and the per-dataset scores are gathered to every rank. Under FSDP every forward needs
all ranks, so each rank runs every dataset in lockstep. The seasonal naive baseline is
scored once, and every evaluation reports aggregate relative scores against it (lower is better).
What ranks checkpoints (tsm.train.selection) is validation when it is on, else the benchmark.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from accelerate.utils import gather_object

from tsm.config import ConfigError, TrainConfig
from tsm.eval.benchmark import (
    check_datasets_exist,
    evaluate_forecasters,
    load_benchmark,
    pipeline_forecaster,
    seasonal_naive_forecaster,
)
from tsm.eval.metrics import aggregate_relative
from tsm.layout import SEASONAL_NAIVE

logger = logging.getLogger("tsm")



class BenchmarkEvaluator:
    def __init__(self, cfg: TrainConfig, rank: int, world_size: int, spread: bool = True):
        assert cfg.benchmark_config is not None
        try:
            self.datasets = load_benchmark(cfg.benchmark_config)
            check_datasets_exist(self.datasets, cfg.benchmark_datasets_root)
        except (FileNotFoundError, ValueError) as exc:  # fail before training, not at the first evaluation
            raise ConfigError(f"benchmark_config {cfg.benchmark_config}: {exc}") from None
        self.cfg = cfg
        self.spread = spread and world_size > 1
        self.mine = self.datasets[rank::world_size] if self.spread else self.datasets
        self.baseline: dict[str, dict[str, float]] | None = None

    def _score(self, forecasters: dict) -> list[dict[str, Any]]:
        frame = evaluate_forecasters(forecasters, self.mine, self.cfg.benchmark_datasets_root,
                                     self.cfg.benchmark_batch_size, progress=False)
        rows = frame.to_dict("records")
        return gather_object(rows) if self.spread else rows

    def run(self, model: Any) -> dict[str, float]:
        """Scores of `model` (an unwrapped Chronos2Model): avg_wql, relative_wql, {dataset}/wql, ... (logged
        under `benchmark/`). All ranks call it."""
        from chronos import Chronos2Pipeline

        started = time.perf_counter()
        if self.baseline is None:
            rows = self._score({SEASONAL_NAIVE: seasonal_naive_forecaster})
            self.baseline = {r["dataset"]: {"wql": r["WQL"], "mase": r["MASE"]} for r in rows}
        rows = self._score({"model": pipeline_forecaster(Chronos2Pipeline(model))})
        scores: dict[str, float] = {}
        for r in rows:
            scores[f"{r['dataset']}/wql"] = r["WQL"]
            scores[f"{r['dataset']}/mase"] = r["MASE"]
        for metric, column in (("wql", "WQL"), ("mase", "MASE")):
            scores[f"avg_{metric}"] = float(np.mean([r[column] for r in rows]))
            scores[f"relative_{metric}"] = aggregate_relative(
                {r["dataset"]: r[column] for r in rows},
                {name: baseline[metric] for name, baseline in self.baseline.items()})
        scores["eval_seconds"] = time.perf_counter() - started
        return scores

    def checkpoint_score(self, scores: dict[str, float]) -> float:
        metric = self.cfg.benchmark_checkpoint_metric
        if metric == "composite":
            w = self.cfg.benchmark_composite_weights
            return (w.wql * scores["relative_wql"] + w.mase * scores["relative_mase"]) / (
                w.wql + w.mase)
        return scores[f"relative_{metric}"]


class Scorer:
    """The evaluations a run makes (validation, benchmark, either or both), when they are due, and the score
    that ranks checkpoints: `validation_{validation_metric}` when validation is on, else the benchmark's
    `benchmark_checkpoint_metric`. Opened before training so that bad inputs fail before any step."""

    def __init__(self, cfg: TrainConfig, output_patch_size: int, rank: int, world_size: int):
        from tsm.train.validation import ValidationSet

        # With FSDP every rank must run every forward, so all ranks evaluate all data in lockstep.
        spread = cfg.parallelism.strategy != "fsdp"
        self.cfg = cfg
        self.validation = ValidationSet(cfg, output_patch_size, rank, world_size, spread) if cfg.validates else None
        self.benchmark = BenchmarkEvaluator(cfg, rank, world_size, spread) if cfg.benchmark_config else None
        self.metric: str | None = (f"validation_{cfg.validation_metric}" if self.validation else
                                   cfg.benchmark_checkpoint_metric if self.benchmark else None)

    def due(self, step: int) -> tuple[bool, bool]:
        """(validate, benchmark) at `step`: every eval_steps / benchmark_eval_steps, and at the last step."""
        last = step == self.cfg.max_steps
        validate = self.validation is not None and (step % self.cfg.eval_steps == 0 or last)
        benchmark = self.benchmark is not None and (step % self.cfg.benchmark_eval_steps == 0 or last)
        return validate, benchmark

    def run(self, step: int, model: Any, accelerator: Any, monitor: Any, validate: bool = True,
            benchmark: bool = True) -> dict[str, float]:
        """Score the training model (all ranks call it); the scores go to the monitor. Holds the ranking score
        under `self.metric` when the evaluation that ranks ran."""
        scores: dict[str, float] = {}
        if validate and self.validation is not None:
            measured = self.validation.run(model, accelerator)
            monitor.on_validation(step, measured)
            scores.update({f"validation_{name}": value for name, value in measured.items()})
        if benchmark and self.benchmark is not None:
            measured = self.benchmark.run(accelerator.unwrap_model(model))
            monitor.on_benchmark(step, measured)
            scores.update(measured)
            if self.validation is None:
                scores[self.metric] = self.benchmark.checkpoint_score(measured)
        return scores
