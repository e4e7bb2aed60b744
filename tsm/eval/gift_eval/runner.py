"""Forecast every GIFT-Eval configuration with Chronos-2 checkpoints or the seasonal naive baseline, and score it.

Multivariate sets: with `multivariate: joint` (the default) Chronos-2 forecasts the variates of an item together,
as one group (its cross-variate attention sees them all); with `univariate` each variate alone, as the published
notebooks of univariate models do. The choice is named in every row (`multivariate` column) and in the
submission's details. The seasonal naive baseline is univariate by nature. Either way the metrics are taken over
every (variate, step) entry, as GIFT-Eval's `evaluate_model(axis=None)` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tsm.eval.benchmark import load_pipeline
from tsm.eval.gift_eval.metrics import METRIC_COLUMNS, QUANTILE_LEVELS, QuantileForecasts, gift_eval_metrics
from tsm.eval.gift_eval.protocol import BenchmarkSpec, GiftEvalDataset, TestWindows, leaderboard_key
from tsm.eval.metrics import seasonal_naive, seasonality_from_freq
from tsm.layout import SEASONAL_NAIVE

logger = logging.getLogger("tsm")

# A forecaster maps (contexts: (variates, T) arrays, horizon, batch size, joint, seasonality) to
# quantiles (rows, Q, H) and means (rows, H), one row per (item, variate) in item-major order.
Forecaster = Callable[[Sequence[np.ndarray], int, int, bool, int], tuple[np.ndarray, np.ndarray]]
DETAIL_COLUMNS = ["configuration", "term", "freq", "horizon", "windows", "series", "variates", "seasonality",
                  "multivariate"]


def univariate_rows(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """(variates, T) arrays -> one 1-D array per (item, variate), item-major (gluonts' MultivariateToUnivariate)."""
    return [row for array in arrays for row in array]


def seasonal_naive_forecaster(contexts: Sequence[np.ndarray], horizon: int, batch_size: int, joint: bool,
                              seasonality: int) -> tuple[np.ndarray, np.ndarray]:
    point = seasonal_naive(univariate_rows(contexts), horizon, seasonality)
    return np.repeat(point[:, None, :], len(QUANTILE_LEVELS), axis=1), point


def pipeline_forecaster(pipeline) -> Forecaster:
    """Chronos-2 in eval mode: `joint` gives each item's variates to the model as one group."""

    def forecast(contexts: Sequence[np.ndarray], horizon: int, batch_size: int, joint: bool,
                 seasonality: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        keep = pipeline.model_context_length
        inputs = list(contexts) if joint else [row[None, :] for row in univariate_rows(contexts)]
        quantiles_out, means_out = [], []
        for start in range(0, len(inputs), batch_size):
            chunk = [torch.tensor(np.ascontiguousarray(array[:, -keep:]), dtype=torch.float32)
                     for array in inputs[start : start + batch_size]]
            quantiles, means = pipeline.predict_quantiles(chunk, prediction_length=horizon,
                                                          quantile_levels=list(QUANTILE_LEVELS),
                                                          batch_size=batch_size)
            for item_quantiles, item_mean in zip(quantiles, means, strict=True):  # (V, H, Q), (V, H)
                quantiles_out.append(item_quantiles.transpose(1, 2).double().cpu().numpy())
                means_out.append(item_mean.double().cpu().numpy())
        return np.concatenate(quantiles_out), np.concatenate(means_out)

    return forecast


def load_forecaster(model: str, device: str = "cpu") -> Forecaster:
    if model == SEASONAL_NAIVE:
        return seasonal_naive_forecaster
    return pipeline_forecaster(load_pipeline(model, device))


def score_configuration(windows: TestWindows, forecaster: Forecaster, joint: bool, batch_size: int = 256
                        ) -> tuple[dict[str, float], int]:
    """The eleven metrics of one model on one configuration, and the seasonality used."""
    seasonality = seasonality_from_freq(windows.freq)
    quantiles, mean = forecaster(windows.contexts, windows.horizon, batch_size, joint, seasonality)
    order = windows.univariate_order()  # the benchmark's row order: its float32 sums round the same
    labels = np.stack(univariate_rows(windows.labels))[order]
    contexts = univariate_rows(windows.contexts)
    forecasts = QuantileForecasts(QUANTILE_LEVELS, quantiles[order], mean[order])
    return gift_eval_metrics(labels, forecasts, [contexts[i] for i in order], seasonality), seasonality


def model_display_name(model: str) -> str:
    """The `model` column: the baseline's published name, else the checkpoint's folder (or hub) name."""
    if model == SEASONAL_NAIVE:
        return "Seasonal_Naive"
    path = Path(model)
    return path.parent.name if path.name == "final-checkpoint" else path.name


def evaluate_gift_eval(models: Sequence[str], spec: BenchmarkSpec, root: str | Path, batch_size: int = 256,
                       device: str = "cpu", progress: bool = True,
                       forecasters: dict[str, Forecaster] | None = None) -> pd.DataFrame:
    """One row per (configuration, model): dataset (the leaderboard's label), model, the eleven metrics, domain,
    num_variates, then tsm's details (DETAIL_COLUMNS) and `model_path`. Every dataset folder is checked before
    any model is loaded."""
    root = Path(root)
    missing = sorted({c.name for c in spec.configurations if not (root / c.name).is_dir()})
    if missing:
        raise FileNotFoundError(f"GIFT-Eval dataset(s) missing under {root}: {', '.join(missing)}; fetch "
                                f"Salesforce/GiftEval once with `tsm data download --gift-eval --root {root}`")
    forecasters = forecasters or {model: load_forecaster(model, device) for model in models}
    joint = spec.multivariate == "joint"
    rows, datasets = [], {}
    for configuration in tqdm(spec.configurations, desc="GIFT-Eval", unit="configuration", disable=not progress):
        if configuration.name not in datasets:
            datasets = {configuration.name: GiftEvalDataset(root, configuration.name)}  # terms follow each other
        windows = datasets[configuration.name].test_windows(configuration.term)
        label = configuration.label(spec.properties)
        properties = spec.properties.get(leaderboard_key(configuration.name), {})
        for model, forecaster in forecasters.items():
            metrics, seasonality = score_configuration(windows, forecaster, joint, batch_size)
            handling = ("joint" if joint and model != SEASONAL_NAIVE else "univariate") \
                if windows.num_variates > 1 else "n.a."
            rows.append({"dataset": label, "model": model_display_name(model), **metrics,
                         "domain": properties.get("domain", "unknown"), "num_variates": windows.num_variates,
                         "configuration": configuration.name, "term": configuration.term, "freq": windows.freq,
                         "horizon": windows.horizon, "windows": windows.windows,
                         "series": len(windows.item_ids) // windows.windows, "variates": windows.num_variates,
                         "seasonality": seasonality, "multivariate": handling, "model_path": model})
            logger.info("%s | %s: MASE %.4f CRPS %.4f", label, model, metrics[METRIC_COLUMNS[3]],
                        metrics[METRIC_COLUMNS[-1]])
    return pd.DataFrame(rows)
