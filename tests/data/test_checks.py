import json
from pathlib import Path

import datasets
import numpy as np
import pytest

import tsm.data.checks as checks_module
from tests.conftest import TEST_CONFIG, write_corpus
from tsm.cli import main
from tsm.data.checks import check, check_corpus
from tsm.records import DataCheckReport, Range


def _reference(rows: list[np.ndarray], min_length: int) -> dict:
    """The statistics computed the slow, obvious way, one row at a time."""
    lengths = [len(r) for r in rows]
    finite_or_inf = [r[~np.isnan(r)] for r in rows]
    return {
        "nan": int(sum(np.isnan(r).sum() for r in rows)),
        "inf": int(sum(np.isinf(r).sum() for r in rows)),
        "all_nan": sum(len(r) > 0 and np.isnan(r).all() for r in rows),
        "constant": sum(len(v) > 0 and v.min() == v.max() for v in finite_or_inf),
        "empty": sum(n == 0 for n in lengths),
        "too_short": sum(0 < n < min_length for n in lengths),
        "usable": sum(n >= min_length and not np.isnan(r).all() for n, r in zip(lengths, rows, strict=True)),
        "with_nan": sum(np.isnan(r).any() for r in rows),
    }


def test_vectorised_statistics_match_a_per_row_reference(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    rows = [rng.normal(size=n).astype("float32") for n in rng.integers(0, 40, size=300)]
    for i in rng.choice(300, 40, replace=False):  # sprinkle NaN, inf, constants and all-NaN rows
        kind = i % 4
        if len(rows[i]) == 0:
            continue
        if kind == 0:
            rows[i][rng.integers(len(rows[i]))] = np.nan
        elif kind == 1:
            rows[i][rng.integers(len(rows[i]))] = -np.inf
        elif kind == 2:
            rows[i][:] = 3.0
        else:
            rows[i][:] = np.nan
    datasets.Dataset.from_dict({"target": rows}).save_to_disk(str(tmp_path / "c"), num_shards=3)
    monkeypatch.setattr(checks_module, "BATCH_ROWS", 7)  # many batches: boundaries must not matter

    report = check_corpus(tmp_path / "c", min_length=10, progress=False)

    expected = _reference(rows, 10)
    assert report.ok, report.errors
    assert report.num_series == 300
    assert report.target.nan == expected["nan"]
    assert report.target.inf == expected["inf"]
    for key in ("all_nan", "constant", "empty", "too_short", "usable", "with_nan"):
        assert getattr(report.series, key) == expected[key], key
    lengths = [len(r) for r in rows]
    assert report.length.min == min(lengths) and report.length.max == max(lengths)
    assert report.length.median == pytest.approx(np.median(lengths))
    assert report.length.p5 == pytest.approx(np.percentile(lengths, 5))
    assert report.target.nan_fraction == pytest.approx(expected["nan"] / sum(lengths))


def test_multivariate_targets_and_covariates_are_described(tmp_path):
    rng = np.random.default_rng(0)
    targets = [rng.normal(size=(3, n)) for n in (20, 30, 25)]
    past = [rng.normal(size=(1, n)) for n in (20, 30, 25)]
    future = [rng.normal(size=(2, n)) for n in (20, 30, 25)]
    write_corpus(tmp_path / "c", targets, past_feat_dynamic_real=past, feat_dynamic_real=future)
    report = check_corpus(tmp_path / "c", min_length=None, progress=False)
    assert report.ok, report.errors
    assert report.target.variates == Range(3, 3)
    assert report.length.min == 20 and report.length.max == 30
    assert report.covariates["past_feat_dynamic_real"].variates == Range(1, 1)
    assert report.covariates["feat_dynamic_real"].variates == Range(2, 2)
    assert report.schema["target"] == "list<item: list<item: double>>"


def test_ragged_multivariate_target_is_fatal_and_names_the_row(tmp_path):
    write_corpus(tmp_path / "c", [[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0, 3.0], [4.0, 5.0]]])
    report = check_corpus(tmp_path / "c", None, progress=False)
    assert not report.ok
    assert any("row 1, column 'target'" in e and "different lengths" in e for e in report.errors)
    assert not any("row 0" in e for e in report.errors)


def test_covariates_of_the_wrong_length_are_fatal(tmp_path):
    write_corpus(tmp_path / "c", [np.arange(5.0), np.arange(4.0)],
                 feat_dynamic_real=[[np.arange(5.0)], [np.arange(6.0)]])
    report = check_corpus(tmp_path / "c", None, progress=False)
    assert not report.ok
    [error] = report.errors
    assert "row 1, column 'feat_dynamic_real'" in error and "[6]" in error and "length 4" in error


def test_string_values_are_fatal_and_name_row_and_value(tmp_path):
    write_corpus(tmp_path / "c", [["1", "2"], ["3", "abc"]])
    report = check_corpus(tmp_path / "c", None, progress=False)
    assert not report.ok
    assert "row 1, column 'target'" in report.errors[0] and "'abc' is not a number" in report.errors[0]


def test_missing_target_column_is_fatal(tmp_path):
    datasets.Dataset.from_dict({"values": [[1.0, 2.0]]}).save_to_disk(str(tmp_path / "c"))
    report = check_corpus(tmp_path / "c", None, progress=False)
    assert not report.ok and "no 'target' column" in report.errors[0] and "values" in report.errors[0]


def test_all_nan_and_inf_series_are_counted_not_fatal(tmp_path):
    write_corpus(tmp_path / "c", [[np.nan] * 20, [1.0, np.inf] + [1.0] * 18, list(np.arange(20.0))])
    report = check_corpus(tmp_path / "c", 10, progress=False)
    assert report.ok
    assert report.series.all_nan == 1 and report.series.usable == 2
    assert report.target.inf == 1 and report.series.with_inf == 1
    assert any("row 0" in w and "NaN" in w for w in report.warnings)
    assert any("row 1" in w and "inf" in w for w in report.warnings)


def test_no_usable_series_is_fatal(tmp_path):
    write_corpus(tmp_path / "nan", [[np.nan] * 20, [np.nan] * 30])
    write_corpus(tmp_path / "short", [np.arange(5.0), np.arange(8.0)])
    nan_report = check_corpus(tmp_path / "nan", 10, progress=False)
    short_report = check_corpus(tmp_path / "short", 10, progress=False)
    assert not nan_report.ok and "no usable series" in nan_report.errors[0]
    assert "2 all NaN" in nan_report.errors[0]
    assert not short_report.ok and "2 shorter than 10" in short_report.errors[0]


def test_unsorted_timestamps_are_counted(tmp_path):
    ts = [np.array(["2020-01-01", "2020-01-03", "2020-01-02"], dtype="datetime64[ms]"),
          np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[ms]"),
          np.array(["2020-01-05", "2020-01-05"], dtype="datetime64[ms]")]  # a duplicate is not increasing
    write_corpus(tmp_path / "c", [[1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0]], timestamp=ts)
    report = check_corpus(tmp_path / "c", None, progress=False)
    assert report.ok and report.series.unsorted_timestamps == 2
    assert report.series.timestamp_length_mismatch == 0


def test_corrupted_arrow_file_is_reported(tmp_path):
    write_corpus(tmp_path / "c", [np.arange(100.0)] * 50)
    arrow_file = next((tmp_path / "c").glob("*.arrow"))
    with open(arrow_file, "r+b") as f:
        f.truncate(arrow_file.stat().st_size // 2)
    report = check_corpus(tmp_path / "c", None, progress=False)
    assert not report.ok and "corrupted" in report.errors[0]


@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_paths_that_are_not_corpora(tmp_path, kind):
    path = tmp_path / "x"
    if kind == "empty":
        path.mkdir()
    elif kind == "file":
        path.write_text("hello")
    report = check_corpus(path, None, progress=False)
    assert not report.ok and str(path) in report.errors[0]


def test_float64_beyond_float32_range_is_warned(tmp_path):
    write_corpus(tmp_path / "c", [np.array([1.0, 1e300, 2.0])])
    report = check_corpus(tmp_path / "c", None, progress=False)
    assert report.ok and report.target.float32_overflow == 1
    assert any("float32 range" in w for w in report.warnings)


def test_check_writes_one_report_for_several_corpora(tmp_path, capsys):
    write_corpus(tmp_path / "good", [np.arange(50.0)] * 3)
    write_corpus(tmp_path / "bad", [np.arange(5.0)], feat_dynamic_real=[[np.arange(4.0)]])
    assert check([tmp_path / "good"], 20, tmp_path / "r1.json", progress=False).ok
    written = check([tmp_path / "good", tmp_path / "bad"], 20, tmp_path / "r2.json", progress=False,
                    summary=tmp_path / "summary.txt")
    assert not written.ok
    report = json.loads((tmp_path / "r2.json").read_text())
    assert report["ok"] is False and [d["ok"] for d in report["datasets"]] == [True, False]
    out = capsys.readouterr().out
    assert "OK   " in out and "FAIL " in out and "median" in out
    assert out.endswith((tmp_path / "summary.txt").read_text())  # the summary file is what the last check printed


def test_the_report_reads_back_as_written(tmp_path):
    """One schema for the writer and the readers: report.json round-trips to the same typed record, with
    every kind of corpus (multivariate with covariates, unusable, not a corpus at all)."""
    rng = np.random.default_rng(0)
    write_corpus(tmp_path / "multi", [rng.normal(size=(2, n)) for n in (20, 30)],
                 past_feat_dynamic_real=[rng.normal(size=(1, n)) for n in (20, 30)])
    write_corpus(tmp_path / "short", [np.arange(5.0)])
    written = check([tmp_path / "multi", tmp_path / "short", tmp_path / "missing"], 10, tmp_path / "report.json",
                    progress=False)
    read = DataCheckReport.read(tmp_path / "report.json")
    assert read == written
    multi, short, missing = read.datasets
    assert multi.ok and multi.target.variates == Range(2, 2) and multi.length.max == 30
    assert multi.covariates["past_feat_dynamic_real"].dtype == multi.schema["past_feat_dynamic_real"]
    assert not short.ok and short.series.too_short == 1 and short.series.total == 1
    assert not missing.ok and missing.series is None and missing.length is None and missing.errors
    # The JSON holds plain figures under the names people read in it.
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["version"] == 1 and data["min_length"] == 10
    assert data["datasets"][0]["series"]["usable"] == 2 and data["datasets"][0]["length"]["median"] == 25.0
    assert data["datasets"][0]["target"]["variates"] == {"min": 2, "max": 2}


def test_a_file_that_is_not_a_report_is_an_error_naming_it(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"ok": True, "datasets": [{"rows": 3}]}))
    with pytest.raises(ValueError, match="report.json: not a tsm data-check report"):
        DataCheckReport.read(tmp_path / "report.json")


@pytest.mark.parametrize("command", ["check", "validate"])  # validate: the old name, still working
def test_cli_uses_the_config_lengths_and_exits_2_on_fatal_problems(tmp_path, capsys, command):
    write_corpus(tmp_path / "c", [np.arange(70.0), np.arange(100.0)])  # test config: min_past 16 + pred 64
    out_json = tmp_path / "report.json"
    assert main(["data", command, "--data", str(tmp_path / "c"), "--config", str(TEST_CONFIG),
                 "--output", str(out_json)]) == 0
    report = DataCheckReport.read(out_json)
    assert report.min_length == 80 and report.datasets[0].series.too_short == 1
    printed = capsys.readouterr()
    assert printed.out.startswith("OK   ")  # the old name prints nothing extra: no notice, no warning
    assert "validate" not in printed.err and "deprecat" not in printed.err.lower()
    write_corpus(tmp_path / "bad", [["x"]])
    assert main(["data", command, "--data", str(tmp_path / "bad"), str(Path(tmp_path / "missing"))]) == 2
    err = capsys.readouterr().err
    assert "data check failed" in err and "Traceback" not in err


def test_the_old_command_name_is_not_listed(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    listed = capsys.readouterr().out
    assert "check" in listed and "validate" not in listed
