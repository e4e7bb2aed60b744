"""tsm data split: the test region is cut off the training folder, kept whole in the benchmark; the leakage
check finds no test-window value in the training folder (and does find them in the unsplit corpus)."""

import json

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from tsm.data.arrow import DataError
from tsm.data.convert import LongColumns, convert
from tsm.data.example import example_frame
from tsm.data.split import read_corpus, split_corpus, truncate_lists
from tsm.eval.own_series import compare_series, fan_chart_series

HORIZON, WINDOWS, MIN_PAST = 6, 2, 8
COLUMNS = LongColumns("item_id", "timestamp", ("sales", "returns"), ("footfall",), ("promo",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A converted corpus of 5 multivariate series with both kinds of covariate, one of them too short."""
    root = tmp_path_factory.mktemp("split")
    frame = example_frame(num_series=4, length=60, seed=1)
    short = example_frame(num_series=1, length=20, seed=2).assign(item_id="short-store")
    path = root / "own.csv"
    pd.concat([frame, short]).to_csv(path, index=False)
    convert(path, root / "own", columns=COLUMNS)
    return root


@pytest.fixture(scope="module")
def split(corpus):
    summary = split_corpus(corpus / "own", corpus / "split", HORIZON, WINDOWS, MIN_PAST, seasonality=5,
                           dataset="stores", target_names=["sales", "returns"], past_names=["footfall"],
                           known_names=["promo"])
    return corpus, summary


def test_the_test_region_is_cut_off_every_column_of_the_training_folder(split):
    root, summary = split
    original = read_corpus(root / "own").to_pylist()
    train = read_corpus(root / "split" / "train").to_pylist()
    kept = [row for row in original if row["id"] != "short-store"]
    assert [row["id"] for row in train] == [row["id"] for row in kept]
    cut = HORIZON * WINDOWS
    for before, after in zip(kept, train, strict=True):
        length = len(before["target"][0])
        for column in ("target", "past_feat_dynamic_real", "feat_dynamic_real"):
            assert [len(v) for v in after[column]] == [length - cut] * len(before[column])
            assert after[column] == [v[: length - cut] for v in before[column]]
        assert after["timestamp"] == before["timestamp"][: length - cut]
    assert summary.kept == 4 and summary.series == 5
    assert summary.train_values == sum((len(r["target"][0]) - cut) * 2 for r in kept)


def test_too_short_series_are_counted_and_named(split):
    root, summary = split
    assert summary.too_short == ["short-store"]
    written = json.loads((root / "split" / "split.json").read_text())
    assert written["too_short"] == ["short-store"] and written["kept"] == 4
    assert "short-store" in summary.text() and "1 series" in summary.text()


def test_the_benchmark_holds_the_series_whole_with_a_fev_task_over_the_test_region(split):
    root, _ = split
    task = yaml.safe_load((root / "split" / "tasks.yaml").read_text())["tasks"][0]
    assert task["horizon"] == HORIZON and task["num_windows"] == WINDOWS and task["window_step_size"] == HORIZON
    assert task["target"] == ["sales", "returns"]
    assert task["known_dynamic_columns"] == ["promo"] and task["past_dynamic_columns"] == ["footfall"]
    original = read_corpus(root / "own").to_pylist()
    bench = datasets.load_from_disk(str(root / "split" / "benchmark" / "stores")).with_format("arrow")[:].to_pylist()
    assert set(bench[0]) == {"id", "timestamp", "sales", "returns", "footfall", "promo"}
    for row, full in zip(bench, [r for r in original if r["id"] != "short-store"], strict=True):
        assert [row["sales"], row["returns"]] == full["target"]
        assert row["promo"] == full["feat_dynamic_real"][0] and row["footfall"] == full["past_feat_dynamic_real"][0]


def test_no_test_window_value_reaches_the_training_folder(split):
    """The series-level leakage check: the training folder holds the history of every series, never a run of
    the test region; the unsplit corpus (the check's control) holds the test region of every series."""
    from tsm.eval.benchmark_files import find_leakage

    root, _ = split
    tasks, bench = root / "split" / "tasks.yaml", root / "split" / "benchmark"
    [trained] = find_leakage(tasks, bench, [root / "split" / "train"])
    assert trained.found_test == set() and len(trained.found_history) == trained.series == 8  # 4 items x 2
    [unsplit] = find_leakage(tasks, bench, [root / "own"])
    assert len(unsplit.found_test) == unsplit.series


def test_truncate_lists_cuts_each_inner_list_of_a_row_alike():
    nested = pa.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[7.0, 8.0], [9.0, 10.0]]])
    assert truncate_lists(nested, np.array([2, 1])).to_pylist() == [[[1.0, 2.0], [4.0, 5.0]], [[7.0], [9.0]]]
    assert truncate_lists(pa.array([[1, 2, 3], [4]]), np.array([1, 0])).to_pylist() == [[1], []]


def test_a_corpus_with_nothing_long_enough_is_refused_naming_what_a_series_needs(corpus, tmp_path):
    with pytest.raises(DataError, match="no series is long enough.*60 test steps"):
        split_corpus(corpus / "own", tmp_path / "out", horizon=30, num_windows=2)


def test_names_that_do_not_match_the_corpus_are_refused(corpus, tmp_path):
    with pytest.raises(DataError, match="1 target name"):
        split_corpus(corpus / "own", tmp_path / "out", HORIZON, target_names=["sales"])


def test_series_comparison_counts_wins_and_ratios_exactly():
    scores = pd.DataFrame([
        {"dataset": "d", "item_id": str(i), "target": "y", "model": model, "WQL": value, "MASE": 1.0}
        for i, (tuned, start) in enumerate([(0.5, 1.0), (1.0, 1.0), (2.0, 1.0), (0.25, 1.0)])
        for model, value in (("finetune", tuned), ("start", start))])
    result = compare_series(scores, "finetune", "start")
    assert result.series == 4 and result.improved == 2
    assert result.win_rate == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert result.ratio == pytest.approx((0.5 * 1.0 * 2.0 * 0.25) ** 0.25)
    assert result.ratio_interval[0] <= result.ratio <= result.ratio_interval[1]
    assert fan_chart_series(scores, "finetune", "start") == {"best": "d/3/y", "median": "d/1/y", "worst": "d/2/y"}
    assert compare_series(scores, "finetune", "missing") is None


def test_a_univariate_corpus_without_covariates_gives_a_plain_task(corpus, tmp_path):
    frame = example_frame(num_series=3, length=40, multivariate=False, seed=3)[["item_id", "timestamp", "sales"]]
    frame.to_csv(tmp_path / "uni.csv", index=False)
    convert(tmp_path / "uni.csv", tmp_path / "uni", columns=LongColumns(targets=("sales",)))
    summary = split_corpus(tmp_path / "uni", tmp_path / "split", horizon=5, num_windows=1, min_past=4,
                           target_names=["sales"])
    task = yaml.safe_load((tmp_path / "split" / "tasks.yaml").read_text())["tasks"][0]
    assert task["target"] == "sales" and "known_dynamic_columns" not in task and "past_dynamic_columns" not in task
    train = read_corpus(tmp_path / "split" / "train").to_pylist()
    assert [len(row["target"]) for row in train] == [35, 35, 35] and summary.train_values == 105


def test_a_folder_of_csv_files_converts_as_one_long_table(tmp_path):
    """Own data kept one file per month: an item's rows spread over the files, read as one."""
    frame = example_frame(num_series=3, length=40, seed=4)
    (tmp_path / "months").mkdir()
    frame.to_csv(tmp_path / "whole.csv", index=False)
    for month, rows in frame.groupby(pd.to_datetime(frame["timestamp"]).dt.month):
        rows.to_csv(tmp_path / "months" / f"2024-{month:02d}.csv", index=False)
    (tmp_path / "months" / "README.txt").write_text("sales per month")
    summary = convert(tmp_path / "months", tmp_path / "from-folder", columns=COLUMNS)
    convert(tmp_path / "whole.csv", tmp_path / "from-file", columns=COLUMNS)
    assert summary.rows_read == len(frame) and summary.items == 3
    assert read_corpus(tmp_path / "from-folder").to_pylist() == read_corpus(tmp_path / "from-file").to_pylist()
    (tmp_path / "mixed").mkdir()
    frame.to_csv(tmp_path / "mixed" / "a.csv", index=False)
    frame.to_parquet(tmp_path / "mixed" / "b.parquet")
    with pytest.raises(DataError, match="csv, parquet files"):
        convert(tmp_path / "mixed", tmp_path / "out", columns=COLUMNS)
