"""Fan-chart data: a few of the windows the benchmark scores, forecast by a checkpoint in eval mode
through the benchmark's own forecaster (`pipeline_forecaster`), so the charts show what was scored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsm.eval.benchmark import BenchmarkDataset, load_windows, pipeline_forecaster
from tsm.eval.metrics import QUANTILE_LEVELS, wql
from tsm.report.plots import FanPanel

LOW, HIGH = 0.1, 0.9  # the band drawn around the median


@dataclass
class DatasetForecasts:
    dataset: BenchmarkDataset
    seasonality: int
    num_windows: int
    panels: list[FanPanel] = field(default_factory=list)


def pick_windows(num_windows: int, count: int) -> list[int]:
    """`count` windows spread evenly over the dataset (first, last and between): deterministic, and not
    only the first few series, which in the competition files are often alike."""
    if num_windows <= count:
        return list(range(num_windows))
    return sorted({int(i) for i in np.linspace(0, num_windows - 1, count).round()})


def context_shown(context_length: int, horizon: int, seasonality: int) -> int:
    """Enough history to judge the forecast: three horizons or two seasons, at least 24 steps."""
    return min(context_length, max(3 * horizon, 2 * seasonality + horizon, 24))


def load_pipeline(checkpoint: Path):
    from chronos import Chronos2Pipeline

    pipeline = Chronos2Pipeline.from_pretrained(str(checkpoint), device_map="cpu")
    pipeline.model.eval()  # dropout off, as the benchmark scores it
    return pipeline


def forecast_datasets(
    pipeline, datasets: Sequence[BenchmarkDataset], datasets_root: Path, series_per_dataset: int
) -> tuple[list[DatasetForecasts], list[str]]:
    """Fan-chart panels per dataset, and a note for each dataset that could not be read."""
    forecaster = pipeline_forecaster(pipeline)
    results, notes = [], []
    for dataset in datasets:
        try:
            windows = load_windows(dataset, datasets_root)
        except (FileNotFoundError, ValueError) as error:
            notes.append(str(error))
            continue
        chosen = pick_windows(len(windows.contexts), series_per_dataset)
        contexts = [windows.contexts[i] for i in chosen]
        horizon = dataset.prediction_length
        quantiles = forecaster(contexts, horizon, windows.seasonality, len(chosen), lambda _: None)
        result = DatasetForecasts(dataset, windows.seasonality, len(windows.contexts))
        for index, context, forecast in zip(chosen, contexts, quantiles, strict=True):
            truth = windows.future[index]
            shown = context_shown(len(context), horizon, windows.seasonality)
            score = wql(truth[None], forecast[None], QUANTILE_LEVELS)
            result.panels.append(FanPanel(
                title=f"window {index + 1} of {len(windows.contexts)} · WQL {score:.3f}",
                context=np.asarray(context[-shown:], dtype=np.float64),
                truth=np.asarray(truth, dtype=np.float64),
                low=forecast[QUANTILE_LEVELS.index(LOW)],
                median=forecast[QUANTILE_LEVELS.index(0.5)],
                high=forecast[QUANTILE_LEVELS.index(HIGH)],
            ))
        results.append(result)
    return results, notes
