import gzip
import json

import datasets
import numpy as np
import pandas as pd
import pytest

from tsm.cli import main
from tsm.data.arrow import ArrowCorpus, DataError
from tsm.data.checks import check_corpus
from tsm.data.convert import LongColumns, convert

CSV = """item_id,timestamp,target,price,promo,note
B,2021-01-02,20,1.5,0,x
A,2020-01-03,3,1,1,x
A,2020-01-01,1,1,0,x
B,2021-01-01,10,1.5,1,x
A,2020-01-02,,1,0,x
,2020-01-04,99,1,0,x
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_long_csv_is_grouped_sorted_and_every_loss_is_counted(tmp_path):
    src = _write(tmp_path, "long.csv", CSV)
    summary = convert(src, tmp_path / "out", columns=LongColumns(past_covariates=["price"],
                                                                  known_covariates=["promo"]))
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds["id"] == ["B", "A"]  # items keep the order in which they first appear
    assert [str(t.date()) for t in ds[1]["timestamp"]] == ["2020-01-01", "2020-01-02", "2020-01-03"]
    np.testing.assert_array_equal(ds[1]["target"], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(ds[0]["target"], [10.0, 20.0])
    assert ds[0]["past_feat_dynamic_real"] == [[1.5, 1.5]] and ds[0]["feat_dynamic_real"] == [[1.0, 0.0]]
    assert summary.rows_read == 6 and summary.items == 2 and summary.values == 5
    assert summary.dropped["rows without an item id"] == 1 and summary.missing_values == 1
    assert summary.items_reordered == 2 and summary.ignored_columns == ["note"]
    corpus = ArrowCorpus(tmp_path / "out")  # what the trainer reads
    assert corpus.item(1).past_covariates.shape == (1, 3) and corpus.item(1).future_covariates.shape == (1, 3)
    assert check_corpus(tmp_path / "out", None, progress=False).ok


def test_parquet_with_several_target_columns_gives_a_multivariate_target(tmp_path):
    frame = pd.DataFrame({
        "sku": [7, 7, 7, 8, 8],
        "time": pd.to_datetime(["2020-01-01 00:00:00.0005", "2020-01-01 00:00:01.0005", "2020-01-01 00:00:02.0005",
                                "2020-01-01 00:00:00.0000", "2020-01-02 00:00:00.0000"]),
        "a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [6.0, 7.0, 8.0, 9.0, 10.0],
    })
    frame.to_parquet(tmp_path / "in.parquet")
    convert(tmp_path / "in.parquet", tmp_path / "out", columns=LongColumns("sku", "time", ["a", "b"]))
    corpus = ArrowCorpus(tmp_path / "out")
    assert str(corpus.table.schema.field("timestamp").type) == "list<item: timestamp[ns]>"  # ms would lose the 0.5 ms
    np.testing.assert_array_equal(corpus.item(0).target, [[1, 2, 3], [6, 7, 8]])
    np.testing.assert_array_equal(corpus.item(1).target, [[4, 5], [9, 10]])
    assert datasets.load_from_disk(str(tmp_path / "out"))["id"] == ["7", "8"]


def test_gluonts_json_lines_with_covariates_and_nan(tmp_path):
    records = [
        {"start": "2020-01", "target": [1, 2, "NaN", 4], "feat_dynamic_real": [[1, 2, 3, 4]], "item_id": "x",
         "past_feat_dynamic_real": [[0, 0, 0, 0], [1, 1, 1, 1]]},
        {"start": "2021-03", "target": [5, None, 7], "feat_dynamic_real": [[1, 2, 3]],
         "past_feat_dynamic_real": [[0, 0, 0], [1, 1, 1]]},
    ]
    src = tmp_path / "train.jsonl.gz"
    with gzip.open(src, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in records) + "\n\n")
    summary = convert(src, tmp_path / "out", freq="M")
    ds = datasets.load_from_disk(str(tmp_path / "out"))
    assert ds["id"] == ["x", "1"]
    assert [str(t.date()) for t in ds[1]["timestamp"]] == ["2021-03-01", "2021-04-01", "2021-05-01"]
    item = ArrowCorpus(tmp_path / "out").item(0)
    np.testing.assert_array_equal(item.target[0], [1, 2, np.nan, 4])
    assert item.past_covariates.shape == (2, 4) and item.future_covariates.shape == (1, 4)
    assert summary.missing_values == 2 and summary.dropped == {"blank lines": 1}


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("item_id,timestamp,target\n", "no data rows"),
    ("item_id,timestamp,value\nA,2020-01-01,1\n", "no column(s) ['target']"),
    ("item_id,timestamp,target\nA,2020-01-01,1\nA,2020-01-02,abc\n", "line 3, column 'target': value 'abc'"),
    ("item_id,timestamp,target\nA,2020-01-01,1\nA,2020-01-02,2\nA,2020-01-01,3\n",
     "line 4: item 'A' has timestamp 2020-01-01 00:00:00 more than once"),
    ("item_id,timestamp,target\nA,yesterday,1\n", "line 2, column 'timestamp': 'yesterday' is not a timestamp"),
])
def test_bad_long_files_are_errors_naming_the_problem(tmp_path, text, message):
    src = _write(tmp_path, "in.csv", text)
    with pytest.raises(DataError) as info:
        convert(src, tmp_path / "out")
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("line, message", [
    ('{"start": "2020-01", "target": [[1, 2], [3]]}', "line 1, field 'target': ragged"),
    ('{"start": "2020-01", "target": [1, 2], "feat_dynamic_real": [[1, 2, 3]]}',
     "field 'feat_dynamic_real': length 3 differs from the target's length 2"),
    ('{"start": "2020-01", "target": [1, "a"]}', "line 1, field 'target': 'a' is not a number"),
    ('{"start": "2020-01"}', "needs fields 'start' and 'target'"),
    ("{not json", "line 1: not valid JSON"),
])
def test_bad_json_lines_are_errors_naming_the_line(tmp_path, line, message):
    src = _write(tmp_path, "in.jsonl", line + "\n")
    with pytest.raises(DataError) as info:
        convert(src, tmp_path / "out", freq="M")
    assert message in str(info.value)


def test_json_lines_need_a_frequency_and_unique_ids(tmp_path):
    src = _write(tmp_path, "in.jsonl", '{"start": "2020-01", "target": [1], "item_id": "a"}\n' * 2)
    with pytest.raises(DataError, match="pass --freq"):
        convert(src, tmp_path / "out")
    with pytest.raises(DataError, match="item_id 'a' appears on record 1 and record 2"):
        convert(src, tmp_path / "out", freq="D")


def test_missing_and_corrupted_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        convert(tmp_path / "nope.csv", tmp_path / "out")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="could not be read as parquet"):
        convert(tmp_path / "bad.parquet", tmp_path / "out")
    with pytest.raises(DataError, match="cannot tell the format"):
        convert(_write(tmp_path, "data.txt", "x"), tmp_path / "out")


def test_values_beyond_float32_need_float64(tmp_path):
    src = _write(tmp_path, "in.csv", "item_id,timestamp,target\nA,2020-01-01,1e300\n")
    with pytest.raises(DataError, match="--dtype float64"):
        convert(src, tmp_path / "out")
    convert(src, tmp_path / "out", dtype="float64")
    assert datasets.load_from_disk(str(tmp_path / "out"))[0]["target"] == [1e300]


def test_a_failed_conversion_leaves_the_previous_output_intact(tmp_path):
    good = _write(tmp_path, "good.csv", "item_id,timestamp,target\nA,2020-01-01,1\nA,2020-01-02,2\n")
    convert(good, tmp_path / "out")
    bad = _write(tmp_path, "bad.csv", "item_id,timestamp,target\nA,2020-01-01,1\nA,2020-01-01,2\n")
    with pytest.raises(DataError):
        convert(bad, tmp_path / "out")
    assert datasets.load_from_disk(str(tmp_path / "out"))[0]["target"] == [1.0, 2.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "good.csv", "out"]  # no temp left over


def test_cli_convert(tmp_path, capsys):
    src = _write(tmp_path, "long.csv", CSV.replace("target", "y"))
    assert main(["data", "convert", "--input", str(src), "--output", str(tmp_path / "out"),
                 "--target-column", "y", "--known-covariates", "promo,price"]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 series" in out and "1 rows without an item id" in out and "columns not converted: note" in out
    assert ArrowCorpus(tmp_path / "out").item(0).future_covariates.shape == (2, 2)
    assert main(["data", "convert", "--input", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
