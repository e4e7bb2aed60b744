"""GIFT-Eval's protocol and metrics against gluonts, the reference implementation the benchmark runs.

The data are synthetic sets laid out as `Salesforce/GiftEval` (tsm.eval.gift_eval.synthetic): an M4 set, a set
named without a frequency, a univariate set with missing values and a multivariate one. gluonts is the oracle:
its own split (`split` + `generate_instances`, as the benchmark's loader calls them) for the windows, and
`evaluate_model` with the benchmark's arguments for the metrics of one fixed forecast.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from tsm.eval.gift_eval.metrics import METRIC_COLUMNS, QUANTILE_LEVELS, QuantileForecasts, gift_eval_metrics
from tsm.eval.gift_eval.protocol import (
    Configuration,
    GiftEvalDataset,
    all_configurations,
    base_freq,
    load_properties,
    num_windows,
    prediction_length,
)
from tsm.eval.gift_eval.runner import univariate_rows
from tsm.eval.gift_eval.synthetic import SYNTHETIC_SETS, write_synthetic_gift_eval

gluonts = pytest.importorskip("gluonts")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gift-eval")
    write_synthetic_gift_eval(folder)
    # Edge cases of the masked metrics: a zero in the labels (MAPE's denominator), a constant context (a zero
    # seasonal error: MASE's and MSIS's denominator) and a label all NaN.
    constant = np.full(120, 5.0, dtype=np.float32)
    zeros = np.abs(np.sin(np.arange(120, dtype=np.float32))) * 4
    zeros[-20:-10] = 0.0
    gaps = np.arange(120, dtype=np.float32) % 9
    gaps[-30:] = np.nan
    datasets.Dataset.from_dict({
        "item_id": ["constant", "zeros", "gaps"], "start": [datetime(2001, 1, 1)] * 3, "freq": ["D"] * 3,
        "target": [constant, zeros, gaps],
    }).save_to_disk(str(folder / "restaurant"))
    return folder


def gluonts_test_data(root: Path, name: str, term: str, to_univariate: bool = True):
    """The benchmark's loader (gift_eval.data.Dataset), written out: ProcessDataEntry, the multivariate ->
    univariate split into `<id>_dim<k>`, then gluonts' split and generate_instances."""
    from gluonts.dataset.common import ProcessDataEntry
    from gluonts.dataset.split import split

    dataset = GiftEvalDataset(root, name)
    horizon, windows = dataset.horizon(term), dataset.windows(term)
    hf = datasets.load_from_disk(str(root / name)).with_format("numpy")
    multivariate = dataset.targets[0].shape[0] > 1
    entries = []
    for row in hf:
        row = {**row, "start": row["start"].item()}  # the loader's itemize_start
        if multivariate and to_univariate:
            for dim, values in enumerate(row["target"]):
                entries.append({**row, "item_id": f"{row['item_id']}_dim{dim}", "target": values})
        else:
            entries.append(row)
    process = ProcessDataEntry(dataset.freq, one_dim_target=not multivariate or to_univariate)
    _, template = split([process(entry) for entry in entries], offset=-horizon * windows)
    return template.generate_instances(prediction_length=horizon, windows=windows, distance=horizon), dataset


def gluonts_order(windows) -> np.ndarray:
    return windows.univariate_order()


# --- the protocol ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*SYNTHETIC_SETS, "restaurant"])
def test_windows_and_horizons_equal_gluonts_split(root, name):
    test_data, dataset = gluonts_test_data(root, name, "short")
    ours = dataset.test_windows("short")
    theirs_inputs, theirs_labels = list(test_data.input), list(test_data.label)
    order = gluonts_order(ours)
    contexts = [univariate_rows(ours.contexts)[i] for i in order]
    labels = [univariate_rows(ours.labels)[i] for i in order]
    assert len(contexts) == len(theirs_inputs) == len(theirs_labels) > 0
    for context, label, their_input, their_label in zip(contexts, labels, theirs_inputs, theirs_labels, strict=True):
        np.testing.assert_array_equal(context, their_input["target"])
        np.testing.assert_array_equal(label, their_label["target"])
        assert len(label) == ours.horizon
    # the benchmark's loader's own numbers, from its rules
    assert ours.horizon == {"m4_yearly": 6, "hospital": 12}.get(name, 30)
    expected_windows = 1 if name.startswith("m4") else min(max(1, math.ceil(0.1 * dataset.min_length / 30
                                                                            if name != "hospital" else
                                                                            0.1 * dataset.min_length / 12)), 20)
    assert ours.windows == expected_windows


def test_multivariate_windows_keep_the_variates_together(root):
    test_data, dataset = gluonts_test_data(root, "ett2/D", "short", to_univariate=False)
    ours = dataset.test_windows("short")
    assert ours.num_variates == 3 and ours.windows == 2  # ceil(0.1 * 400 / 30)
    for context, their_input in zip(ours.contexts, test_data.input, strict=True):
        np.testing.assert_array_equal(context, their_input["target"])


def test_horizons_by_frequency_term_and_the_m4_exceptions():
    from gluonts.time_feature import norm_freq_str
    from pandas.tseries.frequencies import to_offset

    # Every frequency spelling of the benchmark's data, against gluonts' normalisation (old aliases kept).
    reconvert = {"Y": "A", "YE": "A", "QE": "Q", "ME": "M", "h": "H", "min": "T", "s": "S"}
    for freq in ["A-DEC", "Q-DEC", "M", "W-SUN", "W-WED", "D", "H", "15T", "5T", "10T", "10S", "h", "15min", "10s"]:
        try:
            theirs = norm_freq_str(to_offset(freq).name)
        except ValueError:  # an alias this pandas no longer parses
            continue
        assert base_freq(freq) == reconvert.get(theirs, theirs), freq
    assert [prediction_length("m4_yearly", "A-DEC", t) for t in ("short", "medium", "long")] == [6, 60, 90]
    assert prediction_length("m4_hourly", "H", "short") == 48 and prediction_length("m4_monthly", "M", "short") == 18
    assert prediction_length("us_births/M", "M", "short") == 12
    assert prediction_length("m4_weekly", "W-SUN", "short") == 13
    assert prediction_length("electricity/15T", "15T", "long") == 720
    assert prediction_length("bizitobs_application", "10S", "medium") == 600
    assert prediction_length("hierarchical_sales/W", "W-WED", "short") == 8
    assert num_windows("m4_daily", 10_000, 14) == 1
    assert num_windows("solar/10T", 52_560, 48) == 20 and num_windows("car_parts_with_missing", 40, 12) == 1
    assert num_windows("hospital", 84, 12) == 1 and num_windows("ett1/D", 725, 30) == 3


def test_the_97_configurations_and_their_labels_are_the_published_ones():
    configurations = all_configurations()
    properties = load_properties()
    assert len(configurations) == 97
    labels = {c.label(properties) for c in configurations}
    published = Path(__file__).resolve().parents[2] / "config/benchmarks/gift-eval/results/chronos-2/all_results.csv"
    assert labels == {line.split(",")[0] for line in published.read_text().splitlines()[1:]}
    assert Configuration("saugeenday/D", "short").label(properties) == "saugeen/D/short"
    assert Configuration("m4_yearly", "short").label(properties) == "m4_yearly/A/short"


# --- the metrics -----------------------------------------------------------------------------------------------


def fixed_forecast(labels: np.ndarray, seed: int) -> QuantileForecasts:
    """Quantiles around the labels (NaN labels filled), sorted per step; the mean apart from the median."""
    rng = np.random.default_rng(seed)
    centre = np.nan_to_num(labels, nan=3.0)
    spread = np.sort(rng.normal(0, 1.5, (len(labels), len(QUANTILE_LEVELS), labels.shape[1])), axis=1)
    quantiles = centre[:, None, :] + rng.normal(0, 1, (len(labels), 1, labels.shape[1])) + spread
    return QuantileForecasts(QUANTILE_LEVELS, quantiles, quantiles.mean(axis=1) + 0.25)


class FixedPredictor:
    """A gluonts predictor that returns the given forecasts in order."""

    def __init__(self, forecasts: QuantileForecasts, prediction_length: int):
        self.forecasts, self.prediction_length = forecasts, prediction_length

    def predict(self, dataset, **kwargs):
        from gluonts.model.forecast import QuantileForecast

        keys = [str(level) for level in QUANTILE_LEVELS] + ["mean"]
        for row, entry in enumerate(dataset):
            arrays = np.concatenate([self.forecasts.quantiles[row], self.forecasts.mean[row][None]])
            start = entry["start"] + len(entry["target"])
            yield QuantileForecast(arrays, start_date=start, forecast_keys=keys, item_id=entry.get("item_id"))


@pytest.mark.parametrize(("name", "batch_size"), [(name, 1024) for name in [*SYNTHETIC_SETS, "restaurant"]]
                         + [("ett2/D", 5), ("kdd_cup_2018_with_missing/D", 4)])
def test_the_eleven_metrics_equal_evaluate_model(root, name, batch_size):
    from gluonts.ev.metrics import MAE, MAPE, MASE, MSE, MSIS, ND, NRMSE, RMSE, SMAPE, MeanWeightedSumQuantileLoss
    from gluonts.model import evaluate_model
    from gluonts.time_feature import get_seasonality

    test_data, dataset = gluonts_test_data(root, name, "short")
    windows = dataset.test_windows("short")
    order = gluonts_order(windows)
    labels = np.stack(univariate_rows(windows.labels))[order]
    contexts = [univariate_rows(windows.contexts)[i] for i in order]
    forecasts = fixed_forecast(labels, seed=len(name))
    seasonality = get_seasonality(dataset.freq)
    metrics = [MSE(forecast_type="mean"), MSE(forecast_type=0.5), MAE(), MASE(), MAPE(), SMAPE(), MSIS(),
               RMSE(), NRMSE(), ND(), MeanWeightedSumQuantileLoss(quantile_levels=list(QUANTILE_LEVELS))]
    theirs = evaluate_model(FixedPredictor(forecasts, windows.horizon), test_data=test_data, metrics=metrics,
                            batch_size=batch_size, axis=None, mask_invalid_label=True, allow_nan_forecast=False,
                            seasonality=seasonality)
    ours = gift_eval_metrics(labels, forecasts, contexts, seasonality, batch_size=batch_size)
    assert list(ours) == METRIC_COLUMNS
    for column in METRIC_COLUMNS:
        expected = float(np.asarray(theirs[column.removeprefix("eval_metrics/")]).ravel()[0])
        assert ours[column] == pytest.approx(expected, rel=1e-9, abs=1e-12), column
        assert np.isfinite(ours[column]), column


def test_quantiles_outside_the_levels_are_read_as_gluonts_reads_them():
    from gluonts.model.forecast import QuantileForecast

    rng = np.random.default_rng(1)
    quantiles = np.sort(rng.normal(size=(1, len(QUANTILE_LEVELS), 5)), axis=1)
    ours = QuantileForecasts(QUANTILE_LEVELS, quantiles, quantiles[:, 4])
    theirs = QuantileForecast(quantiles[0], start_date=pd.Period("2000-01", freq="M"),
                              forecast_keys=[str(q) for q in QUANTILE_LEVELS])
    for level in (0.025, 0.05, 0.1, 0.15, 0.42, 0.5, 0.95, 0.975):
        np.testing.assert_allclose(ours.quantile(level)[0], theirs.quantile(level), rtol=1e-12)
