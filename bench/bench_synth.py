"""KernelSynth speed: tsm's sampler vs. a plain per-series Cholesky GP sampler, same kernel bank and
expressions, measured in one run. Prints series/s (median of repeats) for both and their ratio.

    python bench/bench_synth.py [--length 1024] [--repeats 5]

Each repeat starts with empty caches (node factorisations, circulant eigenvalues), so cache warm-up is
paid inside the timing. The baseline builds the full kernel matrix and factorises it for every series;
it is timed with the BLAS thread count as found and with one BLAS thread, and the faster one is used.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from tsm.data import synth


def _clear_caches() -> None:
    for cached in (synth._node_factor, synth._interpolation_matrix, synth._product_spectrum,
                   synth._cached_circulant_sqrt_eigenvalues):
        cached.cache_clear()


def _cholesky_series(index: int, length: int, seed: int) -> np.ndarray:
    # Same per-series generator and draws as synth.corpus._one_series, only the GP sampler differs.
    rng = np.random.default_rng([seed, 1, index])
    rng.integers(length, length + 1)
    return synth.sample_expression_cholesky(synth.draw_kernel_expression(rng), length, rng)


def _median_rates(variants: dict[str, tuple[Callable[[int], object], int]], repeats: int) -> dict[str, float]:
    """Series/s per variant, median over repeats. The variants take turns within each repeat, so a
    machine whose load changes during the run (a shared one) weighs on all of them alike."""
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        for name, (run, count) in variants.items():
            _clear_caches()
            start = time.perf_counter()
            run(repeat)
            rates[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fast-series", type=int, default=1000)
    parser.add_argument("--baseline-series", type=int, default=20)
    args = parser.parse_args()
    n_fast, n_base, length = args.fast_series, args.baseline_series, args.length

    def baseline(repeat: int) -> None:
        for i in range(n_base):
            _cholesky_series(repeat * n_base + i, length, seed=0)

    def baseline_one_thread(repeat: int) -> None:
        with synth._single_threaded_blas():
            baseline(repeat)

    def fast(repeat: int, workers: int = 1) -> None:
        synth.generate("kernelsynth", n_fast, length, length, seed=repeat, num_workers=workers)

    rates = _median_rates({
        "base_threads": (baseline, n_base),
        "base_single": (baseline_one_thread, n_base),
        "fast_one": (fast, n_fast),
        "fast_two": (lambda r: fast(r, workers=2), n_fast),
        "fast_variable": (lambda r: synth.generate("kernelsynth", n_fast, 256, 2048, seed=r), n_fast),
    }, args.repeats)
    base_threads, base_single = rates["base_threads"], rates["base_single"]
    fast_one, fast_two, fast_variable = rates["fast_one"], rates["fast_two"], rates["fast_variable"]
    base = max(base_threads, base_single)

    print(f"KernelSynth, length {length}, median of {args.repeats} repeats (series/s)")
    print(f"  Cholesky per series, BLAS threads as found: {base_threads:9.1f}")
    print(f"  Cholesky per series, one BLAS thread:       {base_single:9.1f}")
    print(f"  tsm, one process:                           {fast_one:9.1f}   {fast_one / base:5.1f}x")
    print(f"  tsm, 2 worker processes (incl. start-up):   {fast_two:9.1f}   {fast_two / base:5.1f}x")
    print(f"  tsm, one process, lengths 256..2048:        {fast_variable:9.1f}")
    print(f"ratio tsm / Cholesky (one process each): {fast_one / base:.1f}x")


if __name__ == "__main__":
    main()
