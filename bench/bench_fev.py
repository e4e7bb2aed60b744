"""fev-task evaluation vs. tsm's numpy path: the same models on the same nine M1/M3/Tourism datasets.

`tsm evaluate` on config/benchmarks/fev/chronos-zeroshot-offline.yaml (fev's windows and metrics,
Chronos2Pipeline.predict_fev) against config/benchmarks/lite-offline.yaml (tsm's reader, batching and numpy
metrics), for seasonal naive and a random-init model of the test config's size. Rounds alternate the order;
the figure is the ratio of the medians (fev / numpy), with the per-round spread. The scores are compared
too (they agree to 1e-9 on the same forecasts: tests/eval/test_fev_tasks.py; here the forecasts come from
two batchings, so to float32 rounding).
Usage: python bench/bench_fev.py [--rounds 3] [--datasets-root DIR]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from tsm.data.competitions import build_all
from tsm.eval.benchmark import evaluate
from tsm.eval.fev_tasks import evaluate_fev

REPO = Path(__file__).resolve().parents[1]
FEV_TASKS = REPO / "config" / "benchmarks" / "fev" / "chronos-zeroshot-offline.yaml"
LITE = REPO / "config" / "benchmarks" / "lite-offline.yaml"


def random_model(folder: Path) -> str:
    from tsm.config import load_config
    from tsm.model import build_model

    cfg = load_config(REPO / "config" / "training" / "chronos2-test.yaml")
    model = build_model(cfg.model, cfg.context_length)
    model.save_pretrained(folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--datasets-root", help="the nine datasets (built here if not given)")
    args = parser.parse_args()
    logging.getLogger("fev").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.datasets_root or Path(scratch) / "root")
        build_all(root)
        models = ["seasonal-naive", random_model(Path(scratch) / "model")]
        times: dict[str, list[float]] = {"numpy": [], "fev": []}
        for round_ in range(args.rounds):
            for path in (["numpy", "fev"] if round_ % 2 == 0 else ["fev", "numpy"]):
                began = time.perf_counter()
                if path == "fev":
                    scores = evaluate_fev(models, FEV_TASKS, root, progress=False)[0]
                else:
                    scores = evaluate(models, LITE, root, progress=False)
                times[path].append(time.perf_counter() - began)
                if round_ == 0:
                    print(f"{path}: aggregate over models and datasets WQL {scores['WQL'].mean():.6f}, "
                          f"MASE {scores['MASE'].mean():.6f}")
        for path, values in times.items():
            print(f"{path:>5}: median {statistics.median(values):.2f} s  (rounds: "
                  + ", ".join(f"{v:.2f}" for v in values) + ")")
        ratios = [f / n for f, n in zip(times["fev"], times["numpy"], strict=True)]
        print(f"fev / numpy wall time: {statistics.median(times['fev']) / statistics.median(times['numpy']):.2f}x "
              f"(per round {min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
