"""tsm.eval.benchmark_files: what `tsm data download --benchmark` and `tsm leakage` read from either kind of
benchmark file (tsm's `datasets:` list or a fev task file)."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from tests.conftest import REPO
from tsm.data.arrow import DataError
from tsm.data.download import DEFAULT_REPO, HubDataset
from tsm.eval.benchmark import load_benchmark
from tsm.eval.benchmark_files import datasets_of_benchmark, series_of_benchmark


def test_a_tsm_benchmark_names_each_datasets_repo_and_name():
    wanted = datasets_of_benchmark(REPO / "config/benchmarks/lite.yaml")
    entries = load_benchmark(REPO / "config/benchmarks/lite.yaml")
    assert [d.name for d in wanted] == [e.name for e in entries]
    assert [d.repo for d in wanted] == [e.hf_repo or DEFAULT_REPO for e in entries]


def test_a_dataset_without_its_own_repo_comes_from_the_default_repo(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({"datasets": [{"name": "x", "prediction_length": 2},
                                                 {"name": "y", "prediction_length": 2, "hf_repo": "me/data"}]}))
    assert datasets_of_benchmark(path, default_repo="org/default") == [HubDataset("org/default", "x"),
                                                                        HubDataset("me/data", "y")]


def test_a_fev_task_file_names_its_hub_configs_once_and_skips_tasks_with_files_of_their_own(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": [
        {"dataset_path": "autogluon/fev_datasets", "dataset_config": "a", "horizon": 4},
        {"dataset_path": "autogluon/fev_datasets", "dataset_config": "a", "horizon": 8},  # same data, 2 tasks
        {"dataset_path": "other/repo", "dataset_config": "b", "horizon": 4},
        {"dataset_path": "s3://bucket/own.parquet", "horizon": 4},  # a file of its own: nothing to download
    ]}))
    assert datasets_of_benchmark(path) == [HubDataset("autogluon/fev_datasets", "a"), HubDataset("other/repo", "b")]


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("datasets: [{name: x}]", r"missing key 'prediction_length'"),
    ("tasks: []", r"key 'tasks' must be a non-empty list"),
])
def test_a_bad_benchmark_file_is_a_data_error_naming_it(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        datasets_of_benchmark(path)
    assert str(path) in str(error.value)


def test_the_series_of_a_tsm_benchmark_end_where_its_test_windows_begin(tmp_path: Path):
    lengths = [12, 20, 3]
    series = [np.arange(n, dtype=np.float32) * (i + 1) for i, n in enumerate(lengths)]
    datasets.Dataset.from_dict({"target": series}, features=datasets.Features(
        {"target": datasets.Sequence(datasets.Value("float32"))})).save_to_disk(str(tmp_path / "root" / "walks"))
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump({"datasets": [{"name": "walks", "prediction_length": 2, "num_rolls": 2}]}))
    found = series_of_benchmark(path, tmp_path / "root")
    assert list(found) == ["walks"]
    for (values, test_start), original in zip(found["walks"], series, strict=True):
        np.testing.assert_array_equal(values, original)
        assert test_start == max(len(original) - 4, 0)  # offset defaults to -prediction_length * num_rolls
