"""Forecast metrics of the Chronos papers' protocol (WQL, MASE), the seasonal naive baseline and the
aggregate relative score. numpy only: a whole benchmark dataset scores in milliseconds.

The definitions follow gluonts' `evaluate_forecasts` with `MASE()` and `MeanWeightedSumQuantileLoss`,
which the Chronos evaluation script uses, and agree with it to ~1e-12 (tests/eval/test_metrics.py):

- NaN targets are left out of every sum and count (gluonts masks invalid labels).
- MASE is the mean of |y - median| / scale over all observed (series, step) entries of the dataset.
  With fully observed futures of equal horizon this is exactly the mean over series of each series'
  MASE. A series whose scale is 0 (constant context) or undefined (no seasonal difference to take) is
  left out of the mean, as both gluonts (masked division) and fev (mean over finite values) do;
  if no series is left, MASE is NaN.
- The scale's seasonality falls back to 1 only when it is longer than the context (DESIGN.md, and
  gluonts' `seasonal_error`); a context of exactly one season has no seasonal difference, so its scale
  is undefined and the series is left out of MASE, as in gluonts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from tsm.layout import SEASONAL_NAIVE

QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# Seasonality of one period of each base frequency, as gluonts' DEFAULT_SEASONALITIES (which the
# Chronos evaluation uses): a multiple such as "30min" divides it (1440 / 30 = 48). Aliases are
# case-sensitive because pandas' are ("MS" is month start, "ms" a millisecond).
_BASE_SEASONALITY: dict[str, int] = {
    **dict.fromkeys(["Y", "YE", "YS", "A", "AS", "BY", "BYE", "BYS", "BA", "BAS"], 1),
    **dict.fromkeys(["Q", "QE", "QS", "BQ", "BQE", "BQS"], 4),
    **dict.fromkeys(["M", "ME", "MS", "BM", "BME", "BMS"], 12),
    "W": 1,
    "D": 1,
    "B": 5,
    **dict.fromkeys(["H", "h"], 24),
    **dict.fromkeys(["T", "min"], 1440),
    **dict.fromkeys(["S", "s"], 3600),
    **dict.fromkeys(["L", "ms", "U", "us", "N", "ns"], 1),
}
_FREQ_PATTERN = re.compile(r"(?P<multiple>\d*)(?P<alias>[A-Za-z]+)(?:-[A-Za-z]{3})?")


def seasonality_from_freq(freq: str) -> int:
    """Seasonality for a pandas frequency string: M 12, Q 4, W/D/Y 1, H 24, 30min 48, 15min 96.

    Anchors ("QS-DEC", "W-SUN", "A-DEC") and start/end variants ("MS", "ME", "YE") do not change it. A
    multiple that does not divide the base seasonality ("7min") gives 1, as in gluonts.
    """
    match = _FREQ_PATTERN.fullmatch(freq.strip())
    if match is None or match["alias"] not in _BASE_SEASONALITY:
        raise ValueError(
            f"unknown frequency {freq!r}: expected a pandas alias such as 'Y', 'Q', 'M', 'W', 'D', 'h', "
            f"'30min' (with an optional multiple and anchor, e.g. 'QS-DEC')"
        )
    multiple = int(match["multiple"] or 1)
    if multiple < 1:
        raise ValueError(f"frequency {freq!r} has a multiple below 1")
    seasonality, remainder = divmod(_BASE_SEASONALITY[match["alias"]], multiple)
    return seasonality if remainder == 0 and seasonality >= 1 else 1


def wql(y_true: np.ndarray, quantile_preds: np.ndarray, quantile_levels: Sequence[float]) -> float:
    """Mean weighted quantile loss over a dataset.

    y_true (N, H), quantile_preds (N, Q, H). For each level q:
    2 * sum |(y - q_hat) * (1[q_hat >= y] - q)| / sum |y| over all series and steps with y observed,
    then the mean over levels. A dataset whose observed targets are all 0 gives inf (or NaN), as gluonts.
    """
    target = np.asarray(y_true, dtype=np.float64)
    preds = np.asarray(quantile_preds, dtype=np.float64)
    levels = np.asarray(quantile_levels, dtype=np.float64)
    _check_forecast_shape(target, preds, "quantile_preds", num_levels=len(levels))
    observed = ~np.isnan(target)
    _check_forecast_finite(preds, observed[:, None, :], "quantile_preds")

    loss_per_level, scale = wql_sums(target, preds, levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(loss_per_level / scale))


def wql_sums(target: np.ndarray, preds: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, float]:
    """WQL's sums, unchecked: per level 2 * sum |(y - q_hat) * (1[q_hat >= y] - q)|, and sum |y|, over the
    observed (non-NaN) targets. Sums of several shards (ranks, batches) add up to the whole set's."""
    observed = ~np.isnan(target)
    target_b = target[:, None, :]
    loss = 2.0 * np.abs((target_b - preds) * ((preds >= target_b) - levels[None, :, None]))
    loss_per_level = np.where(observed[:, None, :], loss, 0.0).sum(axis=(0, 2))
    return loss_per_level, float(np.abs(target[observed]).sum())


def mase(y_true: np.ndarray, median: np.ndarray, contexts: Sequence[np.ndarray], seasonality: int) -> float:
    """Mean absolute scaled error of the median forecast over a dataset.

    y_true and median are (N, H); contexts holds each series' history before the forecast window (any
    lengths; NaN allowed). Each series is scaled by the mean absolute seasonal difference of its
    context (`seasonal_scales`). See the module docstring for NaN targets and unusable scales.
    """
    target = np.asarray(y_true, dtype=np.float64)
    forecast = np.asarray(median, dtype=np.float64)
    _check_forecast_shape(target, forecast, "median")
    if len(contexts) != len(target):
        raise ValueError(f"got {len(contexts)} contexts for {len(target)} series")
    observed = ~np.isnan(target)
    _check_forecast_finite(forecast, observed, "median")

    scales = seasonal_scales(contexts, seasonality)
    usable = observed & (np.isfinite(scales) & (scales > 0))[:, None]
    if not usable.any():
        return math.nan
    scaled_errors = np.abs(target - forecast)[usable] / np.broadcast_to(scales[:, None], target.shape)[usable]
    return float(scaled_errors.mean())


def seasonal_scales(contexts: Sequence[np.ndarray], seasonality: int) -> np.ndarray:
    """Per series, the mean absolute seasonal difference mean(|x[t] - x[t - m]|) of its context.

    m falls back to 1 for a context shorter than m. Differences touching a NaN are skipped; with no
    difference left the scale is NaN. Vectorised over all series at once (one concatenation).
    """
    if seasonality < 1:
        raise ValueError(f"seasonality must be >= 1, got {seasonality}")
    num_series = len(contexts)
    if num_series == 0:
        return np.zeros(0)
    lengths = np.array([len(c) for c in contexts], dtype=np.int64)
    lags = np.where(lengths >= seasonality, seasonality, 1)
    num_diffs = np.maximum(lengths - lags, 0)
    flat = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in contexts])

    series_of_diff = np.repeat(np.arange(num_series), num_diffs)
    first_diff = np.cumsum(num_diffs) - num_diffs
    series_start = np.cumsum(lengths) - lengths
    position = np.arange(num_diffs.sum()) - first_diff[series_of_diff] + lags[series_of_diff]
    current = series_start[series_of_diff] + position
    abs_diffs = np.abs(flat[current] - flat[current - lags[series_of_diff]])

    valid = ~np.isnan(abs_diffs)
    sums = np.bincount(series_of_diff[valid], weights=abs_diffs[valid], minlength=num_series)
    counts = np.bincount(series_of_diff[valid], minlength=num_series)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def seasonal_naive(contexts: Sequence[np.ndarray], horizon: int, seasonality: int) -> np.ndarray:
    """Repeat each context's last season over the horizon; returns (N, horizon) float64.

    As gluonts' SeasonalNaivePredictor: missing values are first filled with the last observed value
    (leading ones with the first observed value; an all-NaN context with 0), and a context shorter
    than one season is forecast by its mean. The same value serves every quantile level.
    """
    if seasonality < 1 or horizon < 1:
        raise ValueError(f"seasonality and horizon must be >= 1, got {seasonality} and {horizon}")
    forecasts = np.empty((len(contexts), horizon), dtype=np.float64)
    for row, context in enumerate(contexts):
        filled = _fill_missing(np.asarray(context, dtype=np.float64).ravel())
        if filled.size == 0:
            raise ValueError(f"series {row} has an empty context; it cannot be forecast")
        if filled.size >= seasonality:
            last_season = filled[-seasonality:]
            forecasts[row] = last_season[np.arange(horizon) % seasonality]
        else:
            forecasts[row] = filled.mean()
    return forecasts


def aggregate_relative(model_scores: Mapping[str, float], baseline_scores: Mapping[str, float]) -> float:
    """Geometric mean over the model's datasets of model score / baseline score."""
    if not model_scores:
        raise ValueError("no dataset scores to aggregate")
    missing = [name for name in model_scores if name not in baseline_scores]
    if missing:
        raise ValueError(
            f"the baseline has no score for dataset(s) {', '.join(missing)}; evaluate the baseline on the "
            f"same benchmark (e.g. add --model {SEASONAL_NAIVE})"
        )
    ratios = np.array([model_scores[name] / baseline_scores[name] for name in model_scores], dtype=np.float64)
    with np.errstate(divide="ignore"):
        return float(np.exp(np.mean(np.log(ratios))))


def _fill_missing(values: np.ndarray) -> np.ndarray:
    missing = np.isnan(values)
    if not missing.any():
        return values
    if missing.all():
        return np.zeros_like(values)
    last_observed = np.maximum.accumulate(np.where(missing, 0, np.arange(values.size)))
    filled = values[last_observed]
    # Leading NaNs have no earlier value: take the first observed one.
    filled[: np.argmax(~missing)] = values[np.argmax(~missing)]
    return filled


def _check_forecast_shape(target: np.ndarray, forecast: np.ndarray, name: str, num_levels: int = 0) -> None:
    if target.ndim != 2:
        raise ValueError(f"y_true must be (series, horizon), got shape {target.shape}")
    expected = (target.shape[0], num_levels, target.shape[1]) if num_levels else target.shape
    if forecast.shape != expected:
        raise ValueError(f"{name} must have shape {expected}, got {forecast.shape}")


def _check_forecast_finite(forecast: np.ndarray, observed: np.ndarray, name: str) -> None:
    # A NaN forecast is a bug upstream; gluonts refuses it too rather than scoring it.
    if not np.isfinite(forecast[np.broadcast_to(observed, forecast.shape)]).all():
        raise ValueError(f"{name} holds NaN or inf values where the target is observed")
