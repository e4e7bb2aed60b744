"""TSMixup speed: `tsm data tsmixup`'s mixer vs. the plain version a user would write with `datasets`
(`ds[i]["target"]` per component, same draws and arithmetic), measured in one run. Prints series/s for
both (median of repeats, the variants taking turns) and their ratio, and tsm's rate with 2 processes.

    python bench/bench_tsmixup.py [--num-series 20000] [--corpus-series 50000] [--repeats 3]

The input: a synthetic corpus of `--corpus-series` random walks of 256-2048 points, written once.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np

from tsm.data.synth import write_corpus
from tsm.data.tsmixup import MixupSettings, tsmixup


def plain_tsmixup(path: Path, settings: MixupSettings) -> list[np.ndarray]:
    """The recipe with datasets' row access: one corpus, univariate rows, same random draws as tsm."""
    ds = datasets.load_from_disk(str(path)).with_format("numpy")
    lengths = np.array([len(t) for t in ds["target"]])
    usable = np.flatnonzero(lengths >= settings.min_length)
    out = []
    for index in range(settings.num_series):
        rng = np.random.default_rng([settings.seed, index])
        k = int(rng.integers(1, settings.max_components + 1))
        picks = []
        for _ in range(k):
            rng.integers(1)  # the corpus draw (one corpus)
            values = ds[int(usable[rng.integers(len(usable))])]["target"]
            rng.integers(1)  # the variate draw (univariate)
            picks.append(values)
        length = int(rng.integers(settings.min_length, min(settings.max_length, *map(len, picks)) + 1))
        weights = rng.dirichlet(np.full(k, settings.alpha))
        mixed = np.zeros(length)
        for values, weight in zip(picks, weights, strict=True):
            start = int(rng.integers(0, len(values) - length + 1))
            window = values[start : start + length].astype(np.float64)
            mixed += weight * window / np.abs(window).mean()
        out.append(mixed.astype(np.float32))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-series", type=int, default=20_000)
    parser.add_argument("--corpus-series", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    series = [np.cumsum(rng.normal(size=rng.integers(256, 2049))).astype(np.float32) + 100
              for _ in range(args.corpus_series)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus"
        write_corpus(path, series)
        settings = MixupSettings(num_series=args.num_series, min_length=128, max_length=2048)
        small = MixupSettings(num_series=max(args.num_series // 10, 1), min_length=128, max_length=2048)
        assert all(np.array_equal(a, b) for a, b in zip(tsmixup([path], small), plain_tsmixup(path, small),
                                                         strict=True)), "the variants must produce the same series"
        variants: dict[str, tuple[Callable[[], object], int]] = {
            "tsm (1 process)": (lambda: tsmixup([path], settings), settings.num_series),
            "tsm (2 processes)": (lambda: tsmixup([path], settings, num_workers=2), settings.num_series),
            "plain datasets rows": (lambda: plain_tsmixup(path, small), small.num_series),
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, (run, count) in variants.items():
                start = time.perf_counter()
                run()
                rates[name].append(count / (time.perf_counter() - start))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        print(f"{name:>22}: {rate:10,.0f} series/s  (runs: {', '.join(f'{r:,.0f}' for r in rates[name])})")
    print(f"tsm / plain datasets rows: {medians['tsm (1 process)'] / medians['plain datasets rows']:.1f}x; "
          f"2 processes / 1: {medians['tsm (2 processes)'] / medians['tsm (1 process)']:.2f}x")


if __name__ == "__main__":
    main()
