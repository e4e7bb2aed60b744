"""Repos for the loopback hub, generated here from small synthetic series (never fetched):

- `chronos_datasets_repo`: a dataset repo laid out as `autogluon/chronos_datasets` is: one folder per config
  holding `train-00000-of-00001.parquet` (columns id, timestamp, target: one row per series) and a README whose
  YAML `configs` name each config's files, which is how `datasets.load_dataset(repo, config)` finds them;
- `fev_datasets_repo`: the same layout for the configs of a fev task file (`autogluon/fev_datasets` for
  fev-bench), each with the columns its tasks name (targets, known and past covariates, static columns) and
  long enough for every window of every task reading it;
- `model_files`: a Chronos-2 model folder's files for a model repo.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

PARQUET_NAME = "train-00000-of-00001.parquet"
START = pd.Timestamp("2020-01-01")
# a config's frequency from its name's suffix (fev-bench's naming), else from the task's seasonality
SUFFIX_FREQ = {"5T": "5min", "10T": "10min", "15T": "15min", "1H": "h", "1D": "D", "1W": "W-SUN", "1M": "MS",
               "1Q": "QS", "1Y": "YS"}
SEASONALITY_FREQ = {1440: "min", 288: "5min", 96: "15min", 48: "30min", 24: "h", 12: "MS", 7: "D", 4: "QS",
                    1: "YS"}


def series_values(rng: np.random.Generator, length: int, season: int) -> np.ndarray:
    """A positive series: level, trend, one season and noise (so MASE/WQL are finite and seasonal naive works)."""
    steps = np.arange(length)
    season = max(season, 2)
    return (100.0 + 0.05 * steps + 10.0 * np.sin(2 * np.pi * steps / season)
            + rng.normal(0.0, 1.0, length)).astype(np.float64)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def readme(configs: Iterable[str], title: str) -> bytes:
    front = {"configs": [{"config_name": c, "data_files": [{"split": "train", "path": f"{c}/train-*"}]}
                         for c in configs]}
    return f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n# {title} (tsm's loopback test hub)\n".encode()


def chronos_table(num_series: int, length: int, freq: str, seed: int, season: int = 12) -> pa.Table:
    rng = np.random.default_rng(seed)
    stamps = pd.date_range(START, periods=length, freq=freq).to_numpy().astype("datetime64[ms]")
    return pa.table({
        "id": [f"T{i}" for i in range(num_series)],
        "timestamp": pa.array([stamps] * num_series, type=pa.list_(pa.timestamp("ms"))),
        "target": pa.array([series_values(rng, length, season) for _ in range(num_series)],
                           type=pa.list_(pa.float64())),
    })


def chronos_datasets_repo(configs: dict[str, dict]) -> dict[str, bytes]:
    """{config: {num_series, length, freq[, seed, season]}} -> the repo's files."""
    files = {"README.md": readme(configs, "chronos_datasets")}
    for index, (name, spec) in enumerate(configs.items()):
        table = chronos_table(spec["num_series"], spec["length"], spec["freq"], spec.get("seed", index),
                              spec.get("season", 12))
        files[f"{name}/{PARQUET_NAME}"] = parquet_bytes(table)
    return files


def training_corpus_configs(names: Sequence[str], num_series: int = 20, length: int = 300) -> dict[str, dict]:
    return {name: {"num_series": num_series, "length": length, "freq": "h", "seed": 100 + i, "season": 24}
            for i, name in enumerate(names)}


def benchmark_configs(benchmark: str | Path, num_series: int = 3) -> dict[str, dict]:
    """The configs of a tsm benchmark file (config/benchmarks/*.yaml), each long enough for its windows."""
    document = yaml.safe_load(Path(benchmark).read_text())
    configs = {}
    for i, entry in enumerate(document["datasets"]):
        horizon = entry["prediction_length"] * entry.get("num_rolls", 1)
        freq = {"M": "MS", "Q": "QS", "Y": "YS", "A": "YS"}.get(entry.get("freq") or "D", entry.get("freq") or "D")
        configs[entry["name"]] = {"num_series": num_series, "length": max(-entry.get("offset", -horizon), horizon)
                                  + 120, "freq": freq, "seed": i}
    return configs


# --------------------------------------------------------------------------------------------------- fev tasks
def _task_freq(config: str, seasonality: int) -> str:
    for suffix, freq in SUFFIX_FREQ.items():
        if config.endswith("_" + suffix):
            return freq
    return SEASONALITY_FREQ.get(seasonality, "D")


def _names(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def fev_table(tasks: Sequence[dict], seed: int, num_series: int = 1) -> pa.Table:
    """One config's data for every task that reads it: each named column, long enough for all their windows."""
    rng = np.random.default_rng(seed)
    config = tasks[0]["dataset_config"]
    seasonality = max(int(t.get("seasonality", 1)) for t in tasks)
    freq = _task_freq(config, seasonality)
    length = 0
    for task in tasks:
        scored = task["horizon"] * task.get("num_windows", 1)
        past = max(2 * seasonality, 64)  # MASE's seasonal error needs more than one season of history
        if isinstance(task.get("initial_cutoff"), str):
            before = len(pd.date_range(START, pd.Timestamp(task["initial_cutoff"]), freq=freq))
            length = max(length, before + scored + 1)
        length = max(length, past + scored)
    stamps = pd.date_range(START, periods=length, freq=freq).to_numpy().astype("datetime64[ms]")
    dynamic: dict[str, None] = {}
    static: dict[str, None] = {}
    for task in tasks:
        for column in (_names(task.get("target", "target")) + _names(task.get("known_dynamic_columns"))
                       + _names(task.get("past_dynamic_columns"))):
            dynamic[column] = None
        static.update(dict.fromkeys(_names(task.get("static_columns"))))
    columns = {"id": [f"{config}_{i}" for i in range(num_series)],
               "timestamp": pa.array([stamps] * num_series, type=pa.list_(pa.timestamp("ms")))}
    for column in dynamic:
        columns[column] = pa.array([series_values(rng, length, seasonality) for _ in range(num_series)],
                                   type=pa.list_(pa.float64()))
    for column in static:
        columns[column] = pa.array(rng.integers(0, 5, num_series).astype(np.float64))
    return pa.table(columns)


def fev_datasets_repo(task_file: str | Path, repo: str, num_series: int = 1) -> dict[str, bytes]:
    """The files of `repo` for the tasks of a fev task file that read their data from it."""
    tasks = [t for t in yaml.safe_load(Path(task_file).read_text())["tasks"]
             if t.get("dataset_path") == repo and t.get("dataset_config")]
    by_config: dict[str, list[dict]] = {}
    for task in tasks:
        by_config.setdefault(task["dataset_config"], []).append(task)
    files = {"README.md": readme(by_config, repo)}
    for index, (config, its_tasks) in enumerate(by_config.items()):
        files[f"{config}/{PARQUET_NAME}"] = parquet_bytes(fev_table(its_tasks, seed=1000 + index,
                                                                    num_series=num_series))
    return files


def model_files(folder: str | Path) -> dict[str, bytes]:
    """Every file of a local model folder, by its path inside the folder."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
