"""Benchmark evaluation during training, and the top-K checkpoints it ranks.

Under DDP the datasets are spread over the ranks (each holds the full model), so no rank idles while
another evaluates, and the per-dataset scores are gathered to every rank. Under FSDP every forward needs
all ranks, so each rank runs every dataset in lockstep. The seasonal naive baseline is
scored once, and every evaluation reports aggregate relative scores against it (lower is better).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.utils import gather_object

from tsm.config import ConfigError, TrainConfig
from tsm.eval.benchmark import (
    SEASONAL_NAIVE,
    check_datasets_exist,
    evaluate_forecasters,
    load_benchmark,
    pipeline_forecaster,
    seasonal_naive_forecaster,
)

logger = logging.getLogger("tsm")

BEST_FILE = "best-checkpoints.json"
BEST_LINK = "best-checkpoint"
RECORDED_SCORES = ("relative_wql", "relative_mase", "validation_loss", "validation_wql")


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
            values = [r[column] for r in rows]
            ratios = [r[column] / self.baseline[r["dataset"]][metric] for r in rows]
            scores[f"avg_{metric}"] = float(np.mean(values))
            scores[f"relative_{metric}"] = float(np.exp(np.mean(np.log(ratios))))
        scores["eval_seconds"] = time.perf_counter() - started
        return scores

    def checkpoint_score(self, scores: dict[str, float]) -> float:
        metric = self.cfg.benchmark_checkpoint_metric
        if metric == "composite":
            w = self.cfg.benchmark_composite_weights
            return (w.wql * scores["relative_wql"] + w.mase * scores["relative_mase"]) / (
                w.wql + w.mase)
        return scores[f"relative_{metric}"]


def read_best(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / BEST_FILE
    return json.loads(path.read_text())["checkpoints"] if path.is_file() else []


def update_best(output_dir: Path, step: int, score: float, scores: dict[str, float], metric: str, k: int) -> None:
    """Record checkpoint-{step}'s score (what ranks checkpoints: validation when it is on, else the benchmark);
    keep the k best (lowest) in best-checkpoints.json and point
    `best-checkpoint` at the best one. Rotation by save_total_limit never deletes these."""
    if not math.isfinite(score):
        logger.warning("Step %d: %s is %s; not ranked among the best checkpoints", step, metric, score)
        return
    entries = [e for e in read_best(output_dir) if e["step"] != step]
    entries.append({"step": step, "path": f"checkpoint-{step}", "score": score, "metric": metric,
                    **{key: scores[key] for key in RECORDED_SCORES if key in scores}})
    entries = sorted(entries, key=lambda e: (e["score"], e["step"]))[:k]
    tmp = output_dir / (BEST_FILE + ".tmp")
    tmp.write_text(json.dumps({"metric": metric, "lower_is_better": True, "checkpoints": entries}, indent=2))
    tmp.replace(output_dir / BEST_FILE)
    link = output_dir / BEST_LINK
    new_link = output_dir / (BEST_LINK + ".tmp")
    new_link.unlink(missing_ok=True)
    new_link.symlink_to(entries[0]["path"])  # relative: the run folder can move
    new_link.replace(link)
    logger.info("Best checkpoints by %s: %s", metric,
                ", ".join(f"{e['path']} ({e['score']:.4f})" for e in entries))
