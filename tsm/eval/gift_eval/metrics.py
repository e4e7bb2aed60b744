"""GIFT-Eval's eleven metrics, as gluonts' `evaluate_model(..., axis=None, mask_invalid_label=True,
allow_nan_forecast=False, seasonality=m)` computes them for a `QuantileForecast` (tests compare the two to 1e-9).

Every metric is aggregated over the whole configuration (axis=None): means over every observed (series, step)
entry, sums for ND and the weighted quantile loss. NaN labels are masked out of every sum and count; a NaN
forecast is refused. The seasonal error (MASE's and MSIS's scale) is each series' mean |x[t] - x[t-m]| over its
context with NaN differences left out, m falling back to 1 when the context is shorter than m. As in
numpy's masked division, an entry whose denominator is 0 (a zero label in MAPE, a zero scale in MASE) leaves
the mean instead of making it infinite.
A quantile the forecast does not hold (MSIS's 0.025 and 0.975) is read as gluonts' QuantileForecast does:
linear interpolation between levels, gluonts' exponential tail extrapolation beyond the outer ones.
numpy only: a configuration scores in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MSIS_ALPHA = 0.05
# The benchmark's column names, in the published order.
METRIC_COLUMNS = [
    "eval_metrics/MSE[mean]",
    "eval_metrics/MSE[0.5]",
    "eval_metrics/MAE[0.5]",
    "eval_metrics/MASE[0.5]",
    "eval_metrics/MAPE[0.5]",
    "eval_metrics/sMAPE[0.5]",
    "eval_metrics/MSIS",
    "eval_metrics/RMSE[mean]",
    "eval_metrics/NRMSE[mean]",
    "eval_metrics/ND[0.5]",
    "eval_metrics/mean_weighted_sum_quantile_loss",
]
EVALUATION_BATCH_SIZE = 1024  # evaluate_model's batch_size in the benchmark's notebooks
_TOL = 1e-8  # gluonts' ExponentialTailApproximation tolerance
CRPS = "eval_metrics/mean_weighted_sum_quantile_loss"
MASE = "eval_metrics/MASE[0.5]"


@dataclass
class QuantileForecasts:
    """Forecasts of N univariate series: quantiles (N, Q, H) at `levels`, and the mean (N, H)."""

    levels: tuple[float, ...]
    quantiles: np.ndarray
    mean: np.ndarray

    def quantile(self, level: float) -> np.ndarray:
        """(N, H) at `level` as gluonts' QuantileForecast reads it: a held level as is; inside the outer levels'
        tail range linear interpolation; beyond it gluonts' exponential tail extrapolation (MSIS's 0.025, 0.975)."""
        levels = list(self.levels)
        if level in levels:
            return self.quantiles[:, levels.index(level)]
        left_tail = max(levels[0], min(levels[1], 0.1))
        right_tail = min(levels[-1], max(levels[-2], 0.9))
        q = self.quantiles
        if level <= left_tail:
            beta = (q[:, 1] - q[:, 0]) / np.log((levels[1] + _TOL) / (levels[0] + _TOL) + _TOL)
            return beta * np.log((level + _TOL) / (levels[1] + _TOL) + _TOL) + q[:, 1]
        if level >= right_tail:
            beta = (q[:, -1] - q[:, -2]) / np.log((1 - levels[-2] + _TOL) / (1 - levels[-1] + _TOL) + _TOL)
            return beta * np.log((1 - levels[-2] + _TOL) / (1 - level + _TOL) + _TOL) + q[:, -2]
        upper = next(i for i, held in enumerate(levels) if level <= held)
        low, high = levels[upper - 1], levels[upper]
        return q[:, upper - 1] + (level - low) / (high - low) * (q[:, upper] - q[:, upper - 1])


def seasonal_errors(contexts: Sequence[np.ndarray], seasonality: int) -> np.ndarray:
    """Per series, the mean absolute seasonal difference of its context (NaN where no difference is observed).

    In float32 as gluonts computes it (its data entries hold float32 targets): the masked differences summed in
    float32, then divided by their count in float64; to the last bit, not only to 1e-9."""
    scales = np.empty(len(contexts))
    for row, context in enumerate(contexts):
        values = np.asarray(context, dtype=np.float32).ravel()
        lag = seasonality if seasonality <= len(values) else 1
        differences = np.abs(values[lag:] - values[: len(values) - lag])
        observed = ~np.isnan(differences)
        count = int(observed.sum())
        total = np.where(observed, differences, np.float32(0)).sum(dtype=np.float32)
        scales[row] = float(total) / count if count else np.nan
    return scales


def gift_eval_metrics(labels: np.ndarray, forecasts: QuantileForecasts, contexts: Sequence[np.ndarray],
                      seasonality: int, quantile_levels: Sequence[float] = QUANTILE_LEVELS,
                      batch_size: int = EVALUATION_BATCH_SIZE) -> dict[str, float]:
    """The eleven metrics of one configuration. `labels` (N, H) may hold NaN (left out); `contexts` are the N
    series' histories (the seasonal error's data). Rows in the order of the benchmark's univariate split (item,
    variate, window) and its evaluation's `batch_size`, so that float32 sums round as there."""
    label = np.asarray(labels, dtype=np.float64)
    if forecasts.quantiles.shape != (label.shape[0], len(forecasts.levels), label.shape[1]) \
            or forecasts.mean.shape != label.shape:
        raise ValueError(f"forecasts of shape {forecasts.quantiles.shape} / {forecasts.mean.shape} do not fit "
                         f"labels of shape {label.shape}")
    if not (np.isfinite(forecasts.quantiles).all() and np.isfinite(forecasts.mean).all()):
        raise ValueError("the forecast holds NaN or inf values (gluonts' allow_nan_forecast=False refuses them)")
    if len(contexts) != len(label):
        raise ValueError(f"got {len(contexts)} contexts for {len(label)} series")
    observed = ~np.isnan(label)
    scale = seasonal_errors(contexts, seasonality)[:, None]
    median = forecasts.quantile(0.5)
    absolute_label = np.abs(label)

    def mean(values: np.ndarray) -> float:
        # gluonts' masked mean: entries of a masked (NaN) label, or of a masked (unobserved) scale, drop out.
        keep = observed & ~np.isnan(np.broadcast_to(values, label.shape))
        with np.errstate(invalid="ignore"):
            return float(values[keep].mean()) if keep.any() else float("nan")

    def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        # numpy's masked division masks a zero (or masked) denominator: those entries leave the mean.
        denominator = np.broadcast_to(denominator, label.shape)
        usable = (denominator != 0) & ~np.isnan(denominator)
        return np.where(usable, numerator / np.where(usable, denominator, 1.0), np.nan)

    def total(values: np.ndarray) -> float:
        return float(values[observed].sum())

    def label_total() -> float:
        # |label| alone stays float32 in gluonts (its targets are float32): summed per batch of the evaluation,
        # in float32, the batches' sums added in float64.
        magnitude = np.where(observed, np.abs(label.astype(np.float32)), np.float32(0))
        return float(sum(float(magnitude[start : start + batch_size].sum(dtype=np.float32))
                         for start in range(0, len(magnitude), batch_size)))

    with np.errstate(divide="ignore", invalid="ignore"):
        squared_mean = (label - forecasts.mean) ** 2
        error_median = np.abs(label - median)
        lower, upper = forecasts.quantile(MSIS_ALPHA / 2), forecasts.quantile(1 - MSIS_ALPHA / 2)
        interval_score = (upper - lower + 2 / MSIS_ALPHA * (lower - label) * (label < lower)
                          + 2 / MSIS_ALPHA * (label - upper) * (label > upper))
        mse_mean = mean(squared_mean)
        label_sum = label_total()
        quantile_losses = []
        for level in quantile_levels:
            predicted = forecasts.quantile(level)
            loss = 2 * np.abs((label - predicted) * ((label <= predicted) - level))
            quantile_losses.append(total(loss) / label_sum)
        return {
            "eval_metrics/MSE[mean]": mse_mean,
            "eval_metrics/MSE[0.5]": mean((label - median) ** 2),
            "eval_metrics/MAE[0.5]": mean(error_median),
            "eval_metrics/MASE[0.5]": mean(ratio(error_median, scale)),
            "eval_metrics/MAPE[0.5]": mean(ratio(error_median, absolute_label)),
            "eval_metrics/sMAPE[0.5]": mean(ratio(2 * error_median, absolute_label + np.abs(median))),
            "eval_metrics/MSIS": mean(ratio(interval_score, scale)),
            "eval_metrics/RMSE[mean]": float(np.sqrt(mse_mean)),
            "eval_metrics/NRMSE[mean]": float(np.sqrt(mse_mean) / (label_sum / int(observed.sum()))),
            "eval_metrics/ND[0.5]": total(error_median) / label_sum,
            CRPS: float(np.mean(quantile_losses)),
        }
