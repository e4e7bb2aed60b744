"""tsm.eval.series: a saved `datasets` folder read as one Arrow table, and its list columns as numpy series."""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tsm.eval.series import column_to_arrays, read_series, read_table


def _save(folder, columns: dict, features: dict, as_dict: bool = False) -> None:
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    (datasets.DatasetDict({"train": dataset}) if as_dict else dataset).save_to_disk(str(folder))


@pytest.fixture
def two_columns(tmp_path):
    """Three rows, each with a float32 `target`, an int64 `count` and timestamps."""
    targets = [np.arange(n, dtype=np.float32) + 10 * n for n in (4, 6, 5)]
    counts = [np.arange(n, dtype=np.int64) * 3 for n in (4, 6, 5)]
    columns = {"id": ["a", "b", "c"], "target": targets, "count": counts,
               "timestamp": [pd.date_range("2000-01-01", periods=len(t), freq="D").to_numpy() for t in targets]}
    features = {"id": datasets.Value("string"), "target": datasets.Sequence(datasets.Value("float32")),
                "count": datasets.Sequence(datasets.Value("int64")),
                "timestamp": datasets.Sequence(datasets.Value("timestamp[ms]"))}
    _save(tmp_path / "plain", columns, features)
    _save(tmp_path / "as-dict", columns, features, as_dict=True)
    return tmp_path, targets, counts


def test_series_are_every_numeric_list_column_row_by_row(two_columns):
    root, targets, counts = two_columns
    series = read_series(read_table(root / "plain"), root / "plain")
    expected = [values for row in zip(targets, counts, strict=True) for values in row]  # timestamps are no series
    assert len(series) == len(expected)
    for got, want in zip(series, expected, strict=True):
        np.testing.assert_array_equal(got, want.astype(np.float64))
        assert np.issubdtype(got.dtype, np.floating)  # integer columns are read as floats


def test_a_dataset_dict_folder_reads_its_train_split(two_columns):
    root, _, _ = two_columns
    assert read_table(root / "as-dict").equals(read_table(root / "plain"))


def test_float_series_are_views_of_the_table_not_copies(two_columns):
    root, targets, _ = two_columns
    column = read_table(root / "plain").column("target")
    arrays = column_to_arrays(column)
    flat = column.chunks[0].values.to_numpy()
    assert all(np.shares_memory(values, flat) for values in arrays)
    np.testing.assert_array_equal(np.concatenate(arrays), np.concatenate(targets))


def test_as_float_false_keeps_the_stored_type_across_chunks():
    stamps = [np.array(["2000-01-01", "2000-01-02"], dtype="datetime64[ms]"),
              np.array(["2001-05-01"], dtype="datetime64[ms]")]
    column = pa.chunked_array([pa.array([stamps[0]], pa.list_(pa.timestamp("ms"))),
                               pa.array([stamps[1]], pa.list_(pa.timestamp("ms")))])
    arrays = column_to_arrays(column, as_float=False)
    assert [a.dtype for a in arrays] == [np.dtype("datetime64[ms]")] * 2
    for got, want in zip(arrays, stamps, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_list_of_strings_names_the_folder_and_the_column(tmp_path):
    _save(tmp_path / "words", {"target": [["a", "b"]]}, {"target": datasets.Sequence(datasets.Value("string"))})
    with pytest.raises(ValueError, match=r"words: column 'target' holds string lists"):
        read_series(read_table(tmp_path / "words"), tmp_path / "words")


def test_a_folder_without_a_series_column_names_the_folder(tmp_path):
    _save(tmp_path / "ids", {"id": ["a"]}, {"id": datasets.Value("string")})
    with pytest.raises(ValueError, match=r"ids: no series column"):
        read_series(read_table(tmp_path / "ids"), tmp_path / "ids")


def test_a_folder_that_is_not_a_saved_dataset_names_the_folder(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"broken is not a saved `datasets` folder"):
        read_table(tmp_path / "broken")
