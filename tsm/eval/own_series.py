"""Per-series scores on a user's test windows: is the fine-tuned model better than the start, series by series?

`tsm evaluate` scores a fev task file per task (dataset), as fev does. The question a user asks of a fine-tune
is finer: on how many of *my* series did it help, by how much, and is that more than chance? Here the same
fev windows (the test region `tsm data split` cut off, covariates and multivariate targets included) are
forecast by each named model and scored per series (one target column of one item): WQL over the series'
windows, MASE as the mean over its windows of the error scaled by the window's own history. Then:

- `compare_series`: win rate (ties count half), share of series improved, and the geometric mean of the
  per-series ratio, with 95% bootstrap intervals over series;
- `fan_chart_series`: the series of best, median and worst change, for the report's fan charts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tsm.atomic import write_text
from tsm.eval.benchmark import load_pipeline
from tsm.eval.fev_tasks import load_fev_tasks, seasonal_naive_predictions
from tsm.eval.metrics import seasonal_scales, wql_sums
from tsm.layout import SEASONAL_NAIVE

SERIES_SCORES = "series-scores.csv"
FAN_CHARTS = "fan-charts.json"
BAND = ("0.1", "0.5", "0.9")  # the fan chart's band and median
HISTORY_SHOWN = 4  # horizons of history drawn before the last window


def _per_column(predictions, column: str, single: bool):
    """One target column's predictions of a window (predict_fev gives a Dataset for a single target)."""
    if hasattr(predictions, "keys") and column in predictions:
        return predictions[column]
    if single:
        return predictions
    raise ValueError(f"the predictions hold no column '{column}'")


def _window_forecasts(models: Mapping[str, str], task, batch_size: int, device: str) -> dict[str, list]:
    """{model name: its predictions, one per window} (fev's prediction format)."""
    forecasts = {}
    for name, model in models.items():
        if model == SEASONAL_NAIVE:
            forecasts[name], _ = seasonal_naive_predictions(task)
        else:
            forecasts[name], _ = load_pipeline(model, device).predict_fev(task, batch_size=batch_size)
    return forecasts


@dataclass
class _SeriesTally:
    """One series' running sums over its windows for one model."""

    level_loss: np.ndarray | float = 0.0  # WQL's per-level loss sums
    abs_target: float = 0.0
    scaled_errors: list[float] = field(default_factory=list)  # per window: mean |error| / the window's scale

    def add(self, target: np.ndarray, quantiles: np.ndarray, median: np.ndarray, levels: np.ndarray,
            scale: float) -> None:
        loss, abs_sum = wql_sums(target[None, :], quantiles[None, :, :], levels)
        self.level_loss = self.level_loss + loss
        self.abs_target += abs_sum
        observed = ~np.isnan(target)
        if observed.any() and np.isfinite(scale) and scale > 0:
            self.scaled_errors.append(float(np.abs(target - median)[observed].mean() / scale))

    def scores(self) -> dict[str, float]:
        with np.errstate(divide="ignore", invalid="ignore"):
            series_wql = float(np.mean(self.level_loss / self.abs_target))
        return {"WQL": series_wql, "MASE": float(np.mean(self.scaled_errors)) if self.scaled_errors else np.nan}


def score_series(models: Mapping[str, str], benchmark: str | Path, datasets_root: str | Path,
                 batch_size: int = 256, device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """Score every named model ({name: checkpoint folder, hub id or 'seasonal-naive'}) per series of every task.

    Returns (scores, forecasts): scores has one row per (dataset, item_id, target, model) with WQL and MASE;
    forecasts holds each series' last window (history tail, truth, band per model) for the fan charts."""
    rows, forecasts = [], {}
    for fev_task in load_fev_tasks(benchmark, datasets_root):
        task = fev_task.task
        levels = np.asarray(task.quantile_levels, dtype=np.float64)
        single = len(task.target_columns) == 1
        windows = list(task.iter_windows())
        predictions = _window_forecasts(models, task, batch_size, device)
        tallies: dict[tuple[str, str, str], _SeriesTally] = {}
        for w, window in enumerate(windows):
            past, _ = window.get_input_data()
            truth = window.get_ground_truth()
            items = [str(i) for i in past[task.id_column]]
            last = w == len(windows) - 1
            for column in task.target_columns:
                targets = [np.asarray(v, dtype=np.float64) for v in truth[column]]
                histories = [np.asarray(v, dtype=np.float64) for v in past[column]]
                scales = seasonal_scales(histories, task.seasonality)
                for name in models:
                    predicted = _per_column(predictions[name][w], column, single)
                    quantiles = np.stack([np.asarray(predicted[str(q)], dtype=np.float64)
                                          for q in task.quantile_levels], axis=1)
                    median = np.asarray(predicted["predictions"], dtype=np.float64)
                    for row, item in enumerate(items):
                        tallies.setdefault((item, column, name), _SeriesTally()).add(
                            targets[row], quantiles[row], median[row], levels, scales[row])
                        if last:  # the last window: what the fan charts draw
                            entry = forecasts.setdefault(f"{fev_task.name}/{item}/{column}", {
                                "dataset": fev_task.name, "item_id": item, "target": column,
                                "history": histories[row][-HISTORY_SHOWN * task.horizon:].tolist(),
                                "truth": targets[row].tolist(), "bands": {}})
                            entry["bands"][name] = {q: np.asarray(predicted[q], dtype=np.float64)[row].tolist()
                                                    for q in BAND if q in predicted.column_names}
        rows += [{"dataset": fev_task.name, "item_id": item, "target": column, "model": name, **tally.scores()}
                 for (item, column, name), tally in tallies.items()]
    return pd.DataFrame(rows), forecasts


@dataclass
class SeriesComparison:
    """`model` against `against` on one metric, over the series both scored (lower is better)."""

    model: str
    against: str
    metric: str
    series: int
    win_rate: float  # share of series where model < against, ties half
    win_rate_interval: tuple[float, float]
    improved: int  # series where model < against
    ratio: float  # geometric mean of model / against over series
    ratio_interval: tuple[float, float]


def compare_series(scores: pd.DataFrame, model: str, against: str, metric: str = "WQL", resamples: int = 1000,
                   seed: int = 0) -> SeriesComparison | None:
    """Win rate, series improved and the geometric-mean ratio of `model` vs `against`, with 95% bootstrap
    intervals over series (None when they share no series with finite, positive scores)."""
    wide = scores.pivot_table(index=["dataset", "item_id", "target"], columns="model", values=metric,
                              aggfunc="first")
    if model not in wide or against not in wide:
        return None
    pair = wide[[model, against]].to_numpy(dtype=np.float64)
    pair = pair[np.isfinite(pair).all(axis=1) & (pair > 0).all(axis=1)]
    if not len(pair):
        return None
    wins = np.where(pair[:, 0] < pair[:, 1], 1.0, np.where(pair[:, 0] == pair[:, 1], 0.5, 0.0))
    log_ratio = np.log(pair[:, 0] / pair[:, 1])
    draws = np.random.default_rng(seed).integers(0, len(pair), size=(resamples, len(pair)))
    win_draws, ratio_draws = wins[draws].mean(axis=1), np.exp(log_ratio[draws].mean(axis=1))
    return SeriesComparison(
        model=model, against=against, metric=metric, series=len(pair), win_rate=float(wins.mean()),
        win_rate_interval=(float(np.quantile(win_draws, 0.025)), float(np.quantile(win_draws, 0.975))),
        improved=int((pair[:, 0] < pair[:, 1]).sum()), ratio=float(np.exp(log_ratio.mean())),
        ratio_interval=(float(np.quantile(ratio_draws, 0.025)), float(np.quantile(ratio_draws, 0.975))))


def fan_chart_series(scores: pd.DataFrame, model: str, against: str, metric: str = "WQL") -> dict[str, str]:
    """{"best" | "median" | "worst": "dataset/item/target"}: the series whose ratio model / against is the
    lowest, the median and the highest."""
    wide = scores.pivot_table(index=["dataset", "item_id", "target"], columns="model", values=metric,
                              aggfunc="first")
    if model not in wide or against not in wide:
        return {}
    ratio = (wide[model] / wide[against]).replace([np.inf, -np.inf], np.nan).dropna().sort_values()
    if ratio.empty:
        return {}
    keys = ["/".join(map(str, index)) for index in ratio.index]
    return {"best": keys[0], "median": keys[len(keys) // 2], "worst": keys[-1]}


def write_series_scores(models: Mapping[str, str], benchmark: str | Path, datasets_root: str | Path,
                        output_dir: str | Path, start: str = "start", tuned: str = "finetune",
                        batch_size: int = 256, device: str = "cpu") -> pd.DataFrame:
    """score_series, written to OUTPUT_DIR/series-scores.csv and OUTPUT_DIR/fan-charts.json (the series of
    best, median and worst change of `tuned` against `start`, each with every model's band)."""
    scores, forecasts = score_series(models, benchmark, datasets_root, batch_size, device)
    output_dir = Path(output_dir)
    chosen = fan_chart_series(scores, tuned, start)
    charts = {which: forecasts[key] for which, key in chosen.items() if key in forecasts}
    comparisons = [asdict(c) for c in (compare_series(scores, tuned, other, metric)
                                       for other in models if other != tuned for metric in ("WQL", "MASE"))
                   if c is not None]
    write_text(output_dir / SERIES_SCORES, scores.to_csv(index=False))
    write_text(output_dir / FAN_CHARTS, json.dumps({"charts": charts, "comparisons": comparisons}, indent=1))
    return scores
