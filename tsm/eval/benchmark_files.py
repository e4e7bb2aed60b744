"""Either kind of benchmark file, for the commands that take both: tsm's own (a `datasets:` list,
tsm.eval.benchmark) and a fev task file (`tasks:`, tsm.eval.fev_tasks). Here: the hub datasets that
`tsm data download --benchmark` fetches, and the series `tsm leakage` searches the training corpora for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tsm.data.arrow import ArrowCorpus, DataError
from tsm.data.download import DEFAULT_REPO, HubDataset
from tsm.eval.benchmark import benchmark_series_of, load_benchmark
from tsm.eval.fev_tasks import check_sources, is_fev_benchmark, load_fev_tasks, read_task_definitions, task_series
from tsm.eval.leakage import WINDOW, BenchmarkIndex, DatasetLeakage


def datasets_of_benchmark(path: str | Path, default_repo: str = DEFAULT_REPO) -> list[HubDataset]:
    """The hub datasets of a tsm benchmark file, or of a fev task file (its tasks' dataset_path and
    dataset_config; tasks that read a file of their own have nothing to download). A bad file is a DataError
    naming it."""
    try:
        if is_fev_benchmark(path):
            wanted = [HubDataset(t["dataset_path"], t["dataset_config"])
                      for t in read_task_definitions(path) if t.get("dataset_config")]
            return list(dict.fromkeys(wanted))
        entries = load_benchmark(path)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(str(exc)) from None
    return [HubDataset(entry.hf_repo or default_repo, entry.name) for entry in entries]


def series_of_benchmark(benchmark: str | Path, datasets_root: str | Path) -> dict[str, list[tuple[np.ndarray, int]]]:
    """{dataset or task name: [(values, test start)]} of every series of either kind of benchmark file."""
    if is_fev_benchmark(benchmark):
        tasks = load_fev_tasks(benchmark, datasets_root)
        check_sources(tasks, benchmark, datasets_root)
        return {task.name: task_series(task) for task in tasks}
    return benchmark_series_of(load_benchmark(benchmark), datasets_root)


def find_leakage(benchmark: str | Path, datasets_root: str | Path, corpora: Sequence[str | Path],
                 window: int = WINDOW) -> list[DatasetLeakage]:
    """Per dataset of `benchmark` (a tsm benchmark or a fev task file), its series found in `corpora`
    (history or test region)."""
    index = BenchmarkIndex(series_of_benchmark(benchmark, datasets_root), window)
    for path in corpora:
        index.scan(ArrowCorpus(path))
    return index.results
