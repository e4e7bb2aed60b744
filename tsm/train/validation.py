"""Validation during training: loss and WQL on the last `prediction_length` window of each series, its
context cut short as training cuts them (`short_context_share`).

The windows come from `validation_data_paths`, or from the training series themselves, whose last window
is then held out of training (TrainingBatches' `hold_out`). They are read once, at start, so a bad
validation corpus fails before training. Under DDP each rank scores a share and the sums are reduced;
under FSDP every forward needs all ranks, so each rank scores all windows in lockstep.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch

from tsm.config import ConfigError, TrainConfig
from tsm.data.arrow import ArrowCorpus, DataError
from tsm.data.batches import Window, collate, draw_context_length, window_at
from tsm.eval.metrics import QUANTILE_LEVELS, wql_sums  # WQL's levels, as the benchmarks'

logger = logging.getLogger("tsm")



class ValidationSet:
    def __init__(self, cfg: TrainConfig, output_patch_size: int, rank: int, world_size: int, spread: bool):
        held_out = cfg.validation_data_paths is None
        paths = cfg.training_data_paths if held_out else cfg.validation_data_paths
        self.source = ("the last prediction_length steps of each training series (held out of training)"
                       if held_out else ", ".join(paths))
        self.prediction_length = cfg.prediction_length
        self.num_output_patches = math.ceil(cfg.prediction_length / output_patch_size)
        # No activations are kept for a backward pass, so larger batches than training's fit.
        self.batch_size = cfg.per_device_eval_batch_size or 4 * cfg.per_device_train_batch_size
        needed = cfg.min_past + cfg.prediction_length
        candidates: list[tuple[ArrowCorpus, int]] = []
        too_short = total = 0
        for path in paths:
            try:
                corpus = ArrowCorpus(path)
            except DataError as exc:
                raise ConfigError(f"validation data {path}: {exc}") from None
            usable = np.flatnonzero(corpus.lengths >= needed)
            total += len(corpus)
            too_short += len(corpus) - len(usable)
            candidates += [(corpus, int(i)) for i in usable]
        if not candidates:
            raise ConfigError(f"validation data ({self.source}): none of its {total:,} series has the "
                              f"min_past + prediction_length = {needed} steps a validation window needs")
        chosen = range(len(candidates))
        if len(candidates) > cfg.max_validation_series:  # the same subset on every rank and every resume
            chosen = np.sort(np.random.default_rng(cfg.seed).choice(len(candidates), cfg.max_validation_series,
                                                                     replace=False))
        self.summary = (f"{len(chosen):,} windows of {total:,} series from {self.source}; {too_short:,} shorter "
                        f"than {needed} steps skipped" + (f", a random {len(chosen):,} of {len(candidates):,} kept "
                                                          "(max_validation_series)" if len(chosen) < len(candidates)
                                                          else ""))
        windows = []
        # Contexts are cut as training cuts them (short_context_share), with a fixed seed: every rank and every
        # evaluation sees the same windows, and a score covers the short histories that training teaches.
        rng = np.random.default_rng([cfg.seed, 1])
        for k in chosen:
            corpus, index = candidates[k]
            item = corpus.item(index)
            cut = item.target.shape[-1] - cfg.prediction_length
            context_length = draw_context_length(rng, cfg.min_past, cfg.context_length, cfg.short_context_share)
            windows.append(window_at(item, cut, context_length, cfg.prediction_length))
        self.spread = spread and world_size > 1
        self.windows = windows[rank::world_size] if self.spread else windows

    def _batches(self) -> list[list[Window]]:
        batches, current, rows = [], [], 0
        for window in self.windows:
            if current and rows + window.context.shape[0] > self.batch_size:
                batches.append(current)
                current, rows = [], 0
            current.append(window)
            rows += window.context.shape[0]
        return batches + ([current] if current else [])

    @torch.no_grad()
    def run(self, model: torch.nn.Module, accelerator: Any) -> dict[str, float]:
        """Validation loss (the training loss, averaged over rows) and WQL. All ranks call it and get the
        same numbers. `model` is the training model: unwrapped here under DDP so no rank waits on another."""
        if self.spread:
            model = accelerator.unwrap_model(model)
        quantiles = [float(q) for q in model.chronos_config.quantiles]
        levels = [i for i, q in enumerate(quantiles) if any(abs(q - w) < 1e-9 for w in QUANTILE_LEVELS)]
        levels = levels or list(range(len(quantiles)))  # a model without the usual levels: all of its own
        level_values = np.array([quantiles[i] for i in levels], dtype=np.float64)
        # sums: loss x rows, rows, then WQL's numerator per level, then its denominator
        sums = torch.zeros(3 + len(levels), dtype=torch.float64)
        was_training = model.training
        model.eval()
        try:
            for windows in self._batches():
                batch = collate(windows, self.prediction_length, self.num_output_patches)
                rows = batch["context"].shape[0]
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                with accelerator.autocast():
                    out = model(**batch)
                sums[0] += out.loss.double().cpu() * rows
                sums[1] += rows
                preds = out.quantile_preds[:, levels, : self.prediction_length].double().cpu().numpy()
                per_level, scale = wql_sums(batch["future_target"].double().cpu().numpy(), preds, level_values)
                sums[2 : 2 + len(levels)] += torch.from_numpy(per_level)
                sums[-1] += scale
        finally:
            model.train(was_training)
        if self.spread:
            sums = accelerator.reduce(sums.to(accelerator.device), "sum").cpu()
        return {"loss": float(sums[0] / sums[1]), "wql": float((sums[2:-1] / sums[-1]).mean())}
