"""fev task files as benchmarks: fev-bench, its mini version, Chronos Benchmark II as fev tasks.

A fev task file (`tasks:` a list of `fev.Task` definitions; config/benchmarks/fev/) is run through `fev`
itself: its windows, covariates and multivariate targets, its metrics and its summary format, so the
summaries sit beside the published ones in `fev.leaderboard`. tsm adds three things:

- where the data comes from: a task whose `dataset_config` has a folder under `--datasets-root` is read from
  there (a `datasets` folder as `tsm data build-offline` / `tsm data download` write it, or fev's mirror
  layout `<root>/<config>/*.parquet`); any other task comes from the hub, probed first so that a machine
  without network fails in seconds. The summary keeps the task's own `dataset_path` and `dataset_config`:
  the task is the same wherever its bytes were read from (as with fev's `FEV_DATASETS_PREFIX`);
- the forecasts: Chronos-2 checkpoints as `Chronos2Pipeline.predict_fev` makes them (multivariate targets and
  covariates as the model takes them; the predictions built without datasets' per-column hashing, which made a
  task of 100 target columns take minutes), and tsm's seasonal naive baseline;
- `trained_on_this_dataset` from tsm's regime check (training provenance and the series-level search of the
  model's corpora), which fev's leaderboard uses for its leakage imputation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from tsm.data.arrow import DataError
from tsm.data.download import data_files_glob, probe_hub
from tsm.eval.benchmark import load_pipeline, metric_columns
from tsm.eval.metrics import seasonal_naive
from tsm.eval.regime import IN_DOMAIN, model_regimes
from tsm.eval.series import column_to_arrays
from tsm.layout import SEASONAL_NAIVE


@dataclass
class FevTask:
    """One task of a fev task file and where its data is read from."""

    definition: dict[str, Any]  # as written in the file
    task: Any  # fev.Task, reading `source`
    source: str  # the local files, or "hub"

    @property
    def name(self) -> str:
        return self.task.task_name

    @property
    def local(self) -> bool:
        return self.source != "hub"


def is_fev_benchmark(path: str | Path) -> bool:
    """True for a fev task file (a mapping with `tasks`), False for tsm's own format (`datasets`)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # the tsm reader reports the problem
    return isinstance(document, dict) and "tasks" in document


def local_files(datasets_root: str | Path, definition: dict) -> str | None:
    """The glob fev reads for a task whose data lies under the datasets root, else None."""
    config = definition.get("dataset_config")
    return data_files_glob(Path(datasets_root) / config) if config else None


def read_task_definitions(path: str | Path) -> list[dict[str, Any]]:
    """The task mappings of a fev task file (not yet checked by fev)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist (see config/benchmarks/fev/)")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    entries = document.get("tasks") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: key 'tasks' must be a non-empty list of fev task definitions")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: tasks[{index}]: expected a mapping of fev.Task fields, got {entry!r}")
    return entries


def load_fev_tasks(path: str | Path, datasets_root: str | Path) -> list[FevTask]:
    """Read a fev task file; every task reads its data from the datasets root when it is there.

    A problem in the file is a ValueError naming the file, the task and what fev expected.
    """
    import fev
    import pydantic

    tasks = []
    for index, entry in enumerate(read_task_definitions(path)):
        where = (f"{path}: tasks[{index}] "
                 f"({entry.get('task_name') or entry.get('dataset_config') or entry.get('dataset_path')})")
        files = local_files(datasets_root, entry)
        arguments = dict(entry)
        if files is not None:
            arguments.update(dataset_path=files, dataset_config=None,
                             task_name=entry.get("task_name") or entry["dataset_config"])
        try:
            task = fev.Task(**arguments)
        except pydantic.ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}" for e in error.errors())
            raise ValueError(f"{where}: not a valid fev task: {problems}") from None
        except (ValueError, AssertionError, TypeError) as error:  # fev's own checks in Task.__post_init__
            raise ValueError(f"{where}: not a valid fev task: {error or type(error).__name__}") from None
        tasks.append(FevTask(entry, task, files or "hub"))
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{path}: task name(s) {repeated} repeat; give each task its own task_name")
    return tasks


def check_sources(tasks: Sequence[FevTask], benchmark: str | Path, datasets_root: str | Path) -> None:
    """Tasks not under the datasets root come from the hub: probe it once per repo, failing in seconds."""
    remote = [t for t in tasks if not t.local]
    for repo in dict.fromkeys(t.definition["dataset_path"] for t in remote if t.definition.get("dataset_config")):
        try:
            probe_hub(repo)
        except DataError as error:
            missing = ", ".join(t.name for t in remote if t.definition.get("dataset_path") == repo)
            raise FileNotFoundError(
                f"fev task data not found under {datasets_root} for: {missing}; and the hub cannot be read: "
                f"{error}\nFetch it once where there is network with `tsm data download --benchmark {benchmark} "
                f"--root {datasets_root}`; M1/M3/Tourism can be built offline with `tsm data build-offline "
                f"--root {datasets_root}`.") from None


# ---------------------------------------------------------------------------------------------------
# Forecasts in fev's prediction format
# ---------------------------------------------------------------------------------------------------


def predictions_dataset(columns: dict[str, Any]) -> Any:
    """A `datasets.Dataset` of one target's predictions (a 2-D array, or rows, per column) as fev takes them.
    Built with a fingerprint of its own: Dataset.from_dict hashes every column (dill), which costs more than the
    forecast itself once a task has tens of target columns (fev-bench's boomlet tasks: 35 to 100) and windows."""
    import datasets
    import pyarrow as pa

    table = pa.table({name: pa.array(list(np.asarray(values, dtype=np.float64)), type=pa.list_(pa.float64()))
                      for name, values in columns.items()})
    return datasets.Dataset(table, fingerprint=uuid.uuid4().hex)


def seasonal_naive_predictions(task) -> tuple[list, float]:
    """tsm's seasonal naive (repeat the last season; one value for every quantile) for every window."""
    import datasets

    began, per_window = time.monotonic(), []
    for window in task.iter_windows():
        past, _ = window.get_input_data()
        # the window's Arrow table, read once: each `past[column]` deep-copies the features of every column
        # (1.3 s per column on a 100-column task)
        table = past.with_format("arrow")[:]
        predictions = {}
        for column in task.target_columns:
            point = seasonal_naive(column_to_arrays(table.column(column)), task.horizon, task.seasonality)
            predictions[column] = predictions_dataset({"predictions": point,
                                                       **{str(q): point for q in task.quantile_levels}})
        per_window.append(datasets.DatasetDict(predictions))
    return per_window, time.monotonic() - began


def chronos2_predictions(pipeline, task, batch_size: int = 256) -> tuple[list, float]:
    """What `Chronos2Pipeline.predict_fev` forecasts (each window through fev's pandas adapter and `predict_df`:
    multivariate targets together, known covariates as future values), its predictions built by
    `predictions_dataset` (chronos builds them with Dataset.from_dict, per target and window). Returns
    (predictions per window, seconds spent forecasting)."""
    import datasets
    import fev

    # every variate of an item goes in one batch (predict_fev raises batch_size to this too)
    batch_size = max(batch_size, len(task.target_columns) + len(task.past_dynamic_columns)
                     + len(task.known_dynamic_columns))
    per_window, seconds = [], 0.0
    for window in task.iter_windows():
        past_df, future_df, _ = fev.convert_input_data(window, adapter="pandas", as_univariate=False)
        targets = list(window.target_columns)
        began = time.monotonic()
        forecast = pipeline.predict_df(
            past_df, future_df=future_df if window.known_dynamic_columns else None, id_column=window.id_column,
            timestamp_column=window.timestamp_column, target=targets, prediction_length=window.horizon,
            quantile_levels=task.quantile_levels, batch_size=batch_size)
        seconds += time.monotonic() - began
        # rows: items cycle through the targets, each `horizon` consecutive rows (fev's documented layout)
        names = ["predictions", *(str(q) for q in task.quantile_levels)]
        per_series = {n: forecast[n].to_numpy().reshape(-1, window.horizon) for n in names}
        per_window.append(datasets.DatasetDict({
            column: predictions_dataset({n: per_series[n][i::len(targets)] for n in names})
            for i, column in enumerate(targets)}))
    return per_window, seconds


# ---------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------


def summarize(fev_task: FevTask, predictions: list, model: str, inference_time_s: float | None = None,
              trained_on_this_dataset: bool = False) -> dict[str, Any]:
    """fev's evaluation summary of one model on one task, under the task's own identity."""
    summary = fev_task.task.evaluation_summary(predictions, model_name=model, inference_time_s=inference_time_s,
                                               trained_on_this_dataset=trained_on_this_dataset)
    summary.update(dataset_path=fev_task.definition.get("dataset_path"),
                   dataset_config=fev_task.definition.get("dataset_config"), task_name=fev_task.name)
    return summary


def metric_names(task) -> list[str]:
    """The task's metric names (eval metric first), as its summary columns."""
    from fev.metrics import get_metric

    return [get_metric(m).name for m in [task.eval_metric, *task.extra_metrics]]


def task_series(fev_task: FevTask) -> list[tuple[np.ndarray, int]]:
    """[(values, first scored step)] of every target series of a task (tsm.eval.leakage's index)."""
    task = fev_task.task
    table = task.load_full_dataset().data.table
    cutoff = task.cutoffs[0]
    if isinstance(cutoff, str):  # past data ends at the cutoff timestamp, included
        moment = np.datetime64(pd.Timestamp(cutoff))
        starts = [int(np.searchsorted(stamps, moment, side="right"))
                  for stamps in column_to_arrays(table.column(task.timestamp_column), as_float=False)]
    series = []
    for column in task.target_columns:
        for row, values in enumerate(column_to_arrays(table.column(column))):
            if isinstance(cutoff, str):
                start = starts[row]
            else:
                start = len(values) + cutoff if cutoff < 0 else cutoff
            series.append((values, max(start, 0)))
    return series


def evaluate_fev(
    models: Sequence[str],
    benchmark: str | Path,
    datasets_root: str | Path,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    series_check: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score each model on each task of a fev task file.

    Returns (results, summaries): results has tsm's columns (dataset = task name, model, one column per
    metric of the tasks, regime, regime_reason); summaries are fev's own rows (fev.leaderboard reads them).
    """
    if not models:
        raise ValueError(f"no model to evaluate: give checkpoint folders and/or '{SEASONAL_NAIVE}'")
    tasks = load_fev_tasks(benchmark, datasets_root)
    check_sources(tasks, benchmark, datasets_root)
    regimes = model_regimes(
        [str(m) for m in models], [t.name for t in tasks], datasets_root,
        (lambda: {t.name: task_series(t) for t in tasks}) if series_check else None)
    pipelines = {str(m): load_pipeline(str(m), device) for m in models if str(m) != SEASONAL_NAIVE}

    summaries, rows = [], []
    for fev_task in tqdm(tasks, desc="fev tasks", unit="task", disable=not progress):
        for model in map(str, models):
            if model == SEASONAL_NAIVE:
                predictions, seconds = seasonal_naive_predictions(fev_task.task)
            else:
                # load_pipeline leaves the model in eval mode; the median is the point forecast
                predictions, seconds = chronos2_predictions(pipelines[model], fev_task.task, batch_size=batch_size)
            regime = regimes[model][fev_task.name]
            summary = summarize(fev_task, predictions, model, seconds, regime.regime == IN_DOMAIN)
            summaries.append(summary)
            rows.append({"dataset": fev_task.name, "model": model,
                         **{name: summary[name] for name in metric_names(fev_task.task)},
                         "regime": regime.regime, "regime_reason": regime.reason})
    results = pd.DataFrame(rows)
    metrics = metric_columns(results)
    ordered = [m for m in ("MASE", "WQL") if m in metrics] + [m for m in metrics if m not in ("MASE", "WQL")]
    return results[["dataset", "model", *ordered, "regime", "regime_reason"]], pd.DataFrame(summaries)
