"""GIFT-Eval's eleven metrics: tsm's numpy path against gluonts' `evaluate_model` on the same fixed forecasts.

One synthetic configuration in the hub's layout (SERIES univariate series, hourly, horizon 48, NaN in 2% of the
values); both score the same quantile forecasts, rounds alternate the two, and the medians and their ratio are
printed, with the largest relative difference of the eleven figures (the equality the tests hold to 1e-9).
Usage: python bench/bench_gift_eval_metrics.py [--series 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import datasets
import numpy as np


def build(root: Path, series: int) -> None:
    rng = np.random.default_rng(0)
    targets = []
    for _ in range(series):
        values = (50 + 10 * np.sin(np.arange(600) * 2 * np.pi / 24) + rng.normal(0, 2, 600)).astype(np.float32)
        values[rng.random(600) < 0.02] = np.nan
        targets.append(values)
    datasets.Dataset.from_dict({"item_id": [str(i) for i in range(series)], "start": [datetime(2020, 1, 1)] * series,
                                "freq": ["H"] * series, "target": targets}).save_to_disk(str(root / "solar/H"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from gluonts.dataset.common import ProcessDataEntry
    from gluonts.dataset.split import split
    from gluonts.ev.metrics import MAE, MAPE, MASE, MSE, MSIS, ND, NRMSE, RMSE, SMAPE, MeanWeightedSumQuantileLoss
    from gluonts.model import evaluate_model
    from gluonts.model.forecast import QuantileForecast

    from tsm.eval.gift_eval.metrics import METRIC_COLUMNS, QUANTILE_LEVELS, QuantileForecasts, gift_eval_metrics
    from tsm.eval.gift_eval.protocol import GiftEvalDataset
    from tsm.eval.gift_eval.runner import univariate_rows

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        build(root, args.series)
        dataset = GiftEvalDataset(root, "solar/H")
        windows = dataset.test_windows("short")
        labels = np.stack(univariate_rows(windows.labels))
        contexts = univariate_rows(windows.contexts)
        rng = np.random.default_rng(1)
        quantiles = np.sort(np.nan_to_num(labels, nan=50)[:, None, :]
                            + rng.normal(0, 3, (len(labels), len(QUANTILE_LEVELS), labels.shape[1])), axis=1)
        forecasts = QuantileForecasts(QUANTILE_LEVELS, quantiles, quantiles.mean(axis=1))
        hf = datasets.load_from_disk(str(root / "solar/H")).with_format("numpy")
        process = ProcessDataEntry("H", one_dim_target=True)
        entries = [process({**row, "start": row["start"].item()}) for row in hf]
        _, template = split(entries, offset=-windows.horizon * windows.windows)
        test_data = template.generate_instances(prediction_length=windows.horizon, windows=windows.windows,
                                                distance=windows.horizon)
        keys = [str(q) for q in QUANTILE_LEVELS] + ["mean"]

        class Fixed:
            def predict(self, dataset, **kwargs):
                for row, entry in enumerate(dataset):
                    arrays = np.concatenate([forecasts.quantiles[row], forecasts.mean[row][None]])
                    yield QuantileForecast(arrays, entry["start"] + len(entry["target"]), keys)

        metrics = [MSE(forecast_type="mean"), MSE(forecast_type=0.5), MAE(), MASE(), MAPE(), SMAPE(), MSIS(),
                   RMSE(), NRMSE(), ND(), MeanWeightedSumQuantileLoss(quantile_levels=list(QUANTILE_LEVELS))]
        tsm_times, gluonts_times = [], []
        for _ in range(args.rounds):
            started = time.perf_counter()
            ours = gift_eval_metrics(labels, forecasts, contexts, 24)
            tsm_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            theirs = evaluate_model(Fixed(), test_data=test_data, metrics=metrics, batch_size=1024, axis=None,
                                    mask_invalid_label=True, allow_nan_forecast=False, seasonality=24)
            gluonts_times.append(time.perf_counter() - started)
    difference = max(abs(ours[c] - float(np.asarray(theirs[c.removeprefix("eval_metrics/")]).ravel()[0]))
                     / abs(ours[c]) for c in METRIC_COLUMNS)
    tsm_median, gluonts_median = statistics.median(tsm_times), statistics.median(gluonts_times)
    print(f"{len(labels)} windows x {windows.horizon} steps, {args.rounds} interleaved rounds (medians)")
    print(f"tsm numpy     {tsm_median * 1e3:9.1f} ms")
    print(f"gluonts       {gluonts_median * 1e3:9.1f} ms")
    print(f"ratio         {gluonts_median / tsm_median:9.1f}x faster (tsm); largest relative difference "
          f"of the eleven figures {difference:.1e}")


if __name__ == "__main__":
    main()
