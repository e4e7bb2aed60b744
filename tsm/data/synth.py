"""Synthetic pretraining corpora: KernelSynth, simple structured series, their 1:1 mix, and multivariate
groups with covariates.

KernelSynth (Ansari et al. 2024, "Chronos", Appendix) draws 1..`max_kernels` kernels from a bank of
Gaussian-process kernels (21 periodic ones with the paper's periods, dot product, RBF, rational quadratic,
white, constant), combines them left to right with random `+` or `*`, and returns one GP path, float32,
unscaled. As in the paper x = linspace(0, 1, length), so RBF / rational-quadratic / dot-product scales are
relative to the series' span at every length; periods are exactly p steps (the paper's p / 1024 on a grid
of step 1/1023 is p * 1023/1024 steps).

How it is sampled fast, and how exact it is (plain Cholesky costs O(length^3) per series):
- The expression is expanded into a sum of monomials (products of bank kernels). A sum of kernels is the
  covariance of a sum of independent GPs, so each monomial is sampled on its own and the paths added.
- Smooth factors (RBF, rational quadratic, dot product, constant) are analytic in x. Their product is
  sampled exactly at 96 Chebyshev nodes (an eigendecomposition cached per factor combination, shared by
  all series and lengths) and carried to the series' grid by barycentric polynomial interpolation. The
  interpolated path's covariance matches the true kernel matrix to ~1e-13 relative for every product of
  up to five smooth bank kernels (tests/data/test_synth.py checks it), i.e. to rounding.
- Periodic factors: a product of periodic kernels with integer periods has period P = lcm(periods), so on
  the integer grid it is exactly a circulant on Z_P: sampled by FFT (circulant embedding without any
  padding error; eigenvalues below 0 are rounding only and clipped). When P is so large that those FFTs
  would cost more than a factorisation: a pair of periods is expanded in its exact Fourier series
  (modified Bessel weights), dropping terms below 1e-12 of the total weight (a variance error bounded by
  the dropped weight); three or more periods (rare: <1% of series) get a Cholesky factor of their
  Toeplitz matrix with a diagonal jitter of 1e-10 of the variance (grown tenfold only if it fails), or
  the same truncated Fourier series when the series is longer than 2048 (slow, but very rare).
- smooth x periodic = sum_a phi_a(x) h_a(t), with phi the smooth part's features and h_a independent
  periodic paths: exactly the product covariance. A white factor makes the monomial diagonal, so it is
  independent noise with variance noise_level * prod(other factors' k(x, x)).
So the output has the paper's distribution up to rounding, the 1e-12 Fourier tail and the 1e-10 jitter
above, but not the same random numbers as the paper's script. bench/bench_synth.py measures the speed
against a per-series Cholesky sampler with the same bank.

"simple" series are random mixtures of trend (linear, exponential, piecewise linear), zero to two
seasonalities (periods 4..365, 1-4 harmonics, sometimes multiplicative), AR(1)/AR(2) noise, level shifts
and spikes; or random walks (Gaussian or heavy-tailed steps); or intermittent positive demand with zeros;
30% are made positive. Levels and scales vary over four orders of magnitude. "mix" (the default training
corpus) interleaves KernelSynth and simple series 1:1: KernelSynth alone helped WQL but not MASE on
M1/M3/Tourism (shared/DESIGN.md).

Multivariate groups (`generate_multivariate`) give 2-5 variates from 1-3 shared latent sources with a
random mixing matrix and per-variate lags, an optional shared trend and own AR noise; with covariates, 1-2
known-in-future drivers (`feat_dynamic_real`: on/off blocks, smooth series or level steps) enter every
variate with a random weight and lag 0-3.

Every series has its own seed derived from (seed, kind, index), so the output does not depend on
`num_workers` or on how the work is chunked.
"""
from __future__ import annotations

import ctypes
import math
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache, lru_cache, reduce
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa

from tsm.data.writer import list_array, save_table

KINDS = ("kernelsynth", "simple", "mix")
_KIND_STREAM = {"kernelsynth": 1, "simple": 2, "multivariate": 3}  # separate seed streams per generator
_CHUNK_SIZE = 256  # series per parallel task: big enough to amortise pickling, small enough to balance


# --------------------------------------------------------------------------------------------------------
# The kernel bank
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Kernel:
    """One bank kernel. `param`: period in steps (periodic), length scale (rbf), alpha (rq, length scale
    1), sigma_0 (dot), noise level (white); unused for constant."""

    kind: str
    param: float = 0.0


# The Chronos paper's bank (its periods are in steps; 4 appears three times there too, for W, M and Q).
_PERIODS = (24, 48, 96, 168, 336, 672, 7, 14, 30, 60, 365, 730, 4, 26, 52, 4, 6, 12, 4, 40, 10)
KERNEL_BANK: tuple[Kernel, ...] = (
    *(Kernel("periodic", float(p)) for p in _PERIODS),
    *(Kernel("dot", s) for s in (0.0, 1.0, 10.0)),
    *(Kernel("rbf", length) for length in (0.1, 1.0, 10.0)),
    *(Kernel("rq", alpha) for alpha in (0.1, 1.0, 10.0)),
    *(Kernel("white", level) for level in (0.1, 1.0)),
    Kernel("constant"),
)
Monomial = tuple[Kernel, ...]

_NODES = 96  # Chebyshev nodes for smooth factors: 1e-13 accuracy for up to five RBF(0.1) factors
_PERIOD_FFT_CACHED = 1 << 15  # common cycles up to this size keep their eigenvalues in memory
_PERIOD_FFT_MAX = 1 << 22
_CHOLESKY_MAX_LENGTH = 2048  # beyond this a length^3 factorisation costs seconds: use Fourier atoms
_FOURIER_TAIL = 1e-12
_EIG_FLOOR = 1e-13  # relative eigenvalue floor for the node covariance (its numerical rank)


def draw_kernel_expression(rng: np.random.Generator, max_kernels: int = 5) -> list[Monomial]:
    """The paper's random composition, expanded into a sum of monomials (products of bank kernels)."""
    count = int(rng.integers(1, max_kernels + 1))
    picks = [KERNEL_BANK[i] for i in rng.integers(0, len(KERNEL_BANK), count)]
    multiply = rng.integers(0, 2, count - 1).astype(bool)
    monomials: list[Monomial] = [(picks[0],)]
    for kernel, times in zip(picks[1:], multiply, strict=True):
        # Left fold: (expr) * k multiplies every monomial so far; (expr) + k adds a new one.
        monomials = [m + (kernel,) for m in monomials] if times else monomials + [(kernel,)]
    return monomials


def _smooth_kernel_matrix(kernel: Kernel, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a[:, None] - b[None, :]
    if kernel.kind == "rbf":
        return np.exp(-0.5 * (d / kernel.param) ** 2)
    if kernel.kind == "rq":
        return (1.0 + d**2 / (2.0 * kernel.param)) ** -kernel.param
    if kernel.kind == "dot":
        return kernel.param**2 + a[:, None] * b[None, :]
    if kernel.kind == "constant":
        return np.ones_like(d)
    raise ValueError(f"not a smooth kernel: {kernel}")


def _diagonal(kernel: Kernel, x: np.ndarray) -> np.ndarray:
    """k(x, x) of one factor (white included), for monomials that a white factor makes diagonal."""
    if kernel.kind == "dot":
        return kernel.param**2 + x**2
    if kernel.kind == "white":
        return np.full_like(x, kernel.param)
    return np.ones_like(x)


def kernel_matrix(monomials: Sequence[Monomial], length: int) -> np.ndarray:
    """The exact covariance matrix of a KernelSynth expression on `length` points (x in [0, 1]).
    Stationary factors are evaluated once per lag and spread by index (a Toeplitz matrix), so this
    reference is not slowed by evaluating sin/exp on every one of the length^2 pairs."""
    x = np.linspace(0.0, 1.0, length)
    steps = np.arange(length)
    lag_index = np.abs(steps[:, None] - steps[None, :])
    total = np.zeros((length, length))
    for monomial in monomials:
        stationary = np.ones(length)  # as a function of the lag in steps
        product = np.ones((length, length))
        for kernel in monomial:
            if kernel.kind == "periodic":
                stationary *= _periodic_product_row((kernel.param,), steps)
            elif kernel.kind in ("rbf", "rq"):
                stationary *= _smooth_kernel_matrix(kernel, x, x[:1])[:, 0]
            elif kernel.kind == "white":
                product *= kernel.param * np.eye(length)
            else:
                product *= _smooth_kernel_matrix(kernel, x, x)
        total += product * stationary[lag_index]
    return total


# --------------------------------------------------------------------------------------------------------
# Fast exact sampling of one expression
# --------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _chebyshev_nodes() -> np.ndarray:
    return 0.5 * (1.0 - np.cos(np.pi * np.arange(_NODES) / (_NODES - 1)))


@lru_cache(maxsize=32)
def _interpolation_matrix(length: int) -> np.ndarray:
    """Barycentric interpolation from the Chebyshev nodes to linspace(0, 1, length): (length, nodes)."""
    nodes = _chebyshev_nodes()
    weights = np.where(np.arange(_NODES) % 2 == 0, 1.0, -1.0)
    weights[[0, -1]] *= 0.5
    x = np.linspace(0.0, 1.0, length)
    diff = x[:, None] - nodes[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = weights / diff
        matrix = terms / terms.sum(axis=1, keepdims=True)
    # A point exactly on a node (x = 0 and 1 at least) gives inf / inf: it takes that node's value.
    for row in np.flatnonzero(~np.isfinite(matrix).all(axis=1)):
        matrix[row] = diff[row] == 0.0
    return matrix


@lru_cache(maxsize=4096)
def _node_factor(smooth: Monomial) -> np.ndarray:
    """R with R R^T = the smooth product's covariance at the nodes, keeping its numerical rank."""
    nodes = _chebyshev_nodes()
    cov = reduce(np.multiply, (_smooth_kernel_matrix(k, nodes, nodes) for k in smooth))
    eigenvalues, vectors = np.linalg.eigh(cov)
    keep = eigenvalues > _EIG_FLOOR * eigenvalues[-1]
    return np.ascontiguousarray(vectors[:, keep] * np.sqrt(eigenvalues[keep]))


def _smooth_features(smooth: Monomial, length: int) -> np.ndarray:
    """Features (length, rank) whose outer product is the smooth product's kernel matrix."""
    if not smooth:
        return np.ones((length, 1))
    return _interpolation_matrix(length) @ _node_factor(smooth)


def _bessel_i(order: int, z: float) -> float:
    # Power series of the modified Bessel function I_order(z); converges fast for z = 1.
    terms = ((z / 2) ** (2 * m + order) / (math.factorial(m) * math.factorial(m + order)) for m in range(40))
    return sum(terms)


@cache
def _periodic_spectrum(period: float) -> tuple[tuple[float, float], ...]:
    """exp(-2 sin^2(pi d / p)) = sum_k w_k cos(2 pi k d / p): ((frequency rad/step, weight), ...)."""
    atoms = [(0.0, math.exp(-1.0) * _bessel_i(0, 1.0))]
    for order in range(1, 30):
        weight = 2.0 * math.exp(-1.0) * _bessel_i(order, 1.0)
        if weight < _FOURIER_TAIL * 1e-3:
            break
        atoms.append((2.0 * math.pi * order / period, weight))
    return tuple(atoms)


def _fold(frequency: float) -> float:
    # On an integer grid cos(f t) only depends on f modulo 2 pi and its sign.
    frequency = math.fmod(abs(frequency), 2.0 * math.pi)
    return round(min(frequency, 2.0 * math.pi - frequency), 12)


@lru_cache(maxsize=256)
def _product_spectrum(periods: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Fourier atoms of a product of periodic kernels; drops atoms below `_FOURIER_TAIL` of the total."""
    spectrum = {0.0: 1.0}
    for period in periods:
        product: dict[float, float] = {}
        for f1, w1 in spectrum.items():
            for f2, w2 in _periodic_spectrum(period):
                for f in (_fold(f1 + f2), _fold(f1 - f2)):  # cos a cos b = (cos(a+b) + cos(a-b)) / 2
                    product[f] = product.get(f, 0.0) + 0.5 * w1 * w2
        total = sum(product.values())
        spectrum = {f: w for f, w in product.items() if w >= _FOURIER_TAIL * total}
    frequencies = np.array(sorted(spectrum))
    return frequencies, np.array([spectrum[f] for f in sorted(spectrum)])


def _periodic_product_row(periods: tuple[float, ...], lags: np.ndarray) -> np.ndarray:
    """prod_i exp(-2 sin^2(pi lag / p_i)) at integer lags; each factor is evaluated over one period only."""
    row = np.ones(len(lags))
    for period in periods:
        one_period = np.exp(-2.0 * np.sin(np.pi * np.arange(int(period)) / period) ** 2)
        row *= one_period[lags % int(period)]
    return row


def _circulant_sqrt_eigenvalues(periods: tuple[float, ...]) -> np.ndarray:
    """sqrt(eigenvalues / P) of the periodic product's circulant on Z_P, P = lcm(periods)."""
    cycle = math.lcm(*(int(p) for p in periods))
    first_row = _periodic_product_row(periods, np.arange(cycle))
    half = np.clip(np.fft.rfft(first_row).real, 0.0, None)  # negatives are rounding only
    eigenvalues = np.concatenate([half, half[1:(cycle + 1) // 2][::-1]])  # a symmetric row: even spectrum
    return np.sqrt(eigenvalues / cycle)


_cached_circulant_sqrt_eigenvalues = lru_cache(maxsize=512)(_circulant_sqrt_eigenvalues)


def _periodic_paths(
    periods: tuple[float, ...], length: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """`count` independent paths (length, count) of the GP whose kernel is the product of the periods."""
    cycle = math.lcm(*(int(p) for p in periods))
    pairs = (count + 1) // 2
    # Cost model measured here: an FFT point costs ~3e-6 ms per log2(size), a Cholesky flop ~1e-7 ms.
    fft_is_cheaper = pairs * cycle * math.log2(cycle) <= 0.01 * length**3 and cycle <= _PERIOD_FFT_MAX
    if cycle <= _PERIOD_FFT_CACHED or fft_is_cheaper:
        cached = cycle <= _PERIOD_FFT_CACHED
        root = (_cached_circulant_sqrt_eigenvalues if cached else _circulant_sqrt_eigenvalues)(periods)
        noise = rng.standard_normal((pairs, cycle)) + 1j * rng.standard_normal((pairs, cycle))
        spectral = np.fft.fft(root * noise, axis=1)
        # Real and imaginary parts are two independent draws (Dietrich & Newsam circulant embedding).
        paths = np.concatenate([spectral.real, spectral.imag])[:count]
        return paths[:, np.arange(length) % cycle].T
    if len(periods) == 2 or length > _CHOLESKY_MAX_LENGTH:
        # A pair has ~100-200 Fourier atoms above the tail: cheaper than a factorisation. Long series with
        # 3+ periods take this path too (thousands of atoms, but no length^3 factorisation).
        return _fourier_paths(periods, length, count, rng)
    # Three or more periods with a huge common cycle (~1-2% of series): thousands of atoms, so factorise.
    lag = np.arange(length)
    toeplitz = _periodic_product_row(periods, lag)[np.abs(lag[:, None] - lag[None, :])]
    return _cholesky_with_jitter(toeplitz) @ rng.standard_normal((length, count))


def _fourier_paths(
    periods: tuple[float, ...], length: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """sum over atoms of sqrt(w) (a cos(f t) + b sin(f t)), in blocks of atoms to bound memory."""
    frequencies, weights = _product_spectrum(periods)
    steps = np.arange(length, dtype=np.float64)[:, None]
    paths = np.zeros((length, count))
    for begin in range(0, len(frequencies), 512):
        phase = steps * frequencies[None, begin: begin + 512]
        root = np.sqrt(weights[begin: begin + 512])
        paths += (np.cos(phase) * root) @ rng.standard_normal((len(root), count))
        paths += (np.sin(phase) * root) @ rng.standard_normal((len(root), count))
    return paths


def _cholesky_with_jitter(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor of cov + jitter * I, the jitter starting at 1e-10 of the mean variance and growing
    tenfold until the factorisation succeeds (GP kernel matrices here are often numerically singular)."""
    jitter = 1e-10 * max(float(np.mean(np.diag(cov))), 1e-12)
    while True:
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter *= 10.0


def _sample_monomial(monomial: Monomial, length: int, rng: np.random.Generator) -> np.ndarray:
    whites = [k for k in monomial if k.kind == "white"]
    if whites:
        x = np.linspace(0.0, 1.0, length)
        variance = reduce(np.multiply, (_diagonal(k, x) for k in monomial))
        return np.sqrt(variance) * rng.standard_normal(length)
    periods = tuple(sorted(k.param for k in monomial if k.kind == "periodic"))
    smooth = tuple(sorted(k for k in monomial if k.kind != "periodic"))
    if not periods:  # sample at the nodes, then interpolate one vector (not the whole feature matrix)
        factor = _node_factor(smooth)
        return _interpolation_matrix(length) @ (factor @ rng.standard_normal(factor.shape[1]))
    features = _smooth_features(smooth, length)
    paths = _periodic_paths(periods, length, features.shape[1], rng)
    return np.einsum("tr,tr->t", features, paths)


def sample_expression(monomials: Sequence[Monomial], length: int, rng: np.random.Generator) -> np.ndarray:
    """One path (float64) of the zero-mean GP whose kernel is the sum of the monomials."""
    return sum((_sample_monomial(m, length, rng) for m in monomials), start=np.zeros(length))


def sample_expression_cholesky(
    monomials: Sequence[Monomial], length: int, rng: np.random.Generator
) -> np.ndarray:
    """The plain reference sampler: full kernel matrix, one Cholesky (with jitter), one matmul."""
    return _cholesky_with_jitter(kernel_matrix(monomials, length)) @ rng.standard_normal(length)


def kernelsynth_series(rng: np.random.Generator, length: int, max_kernels: int = 5) -> np.ndarray:
    return sample_expression(draw_kernel_expression(rng, max_kernels), length, rng)


# --------------------------------------------------------------------------------------------------------
# Simple series: trend, seasonality, AR noise, level shifts, spikes, intermittent demand, random walks
# --------------------------------------------------------------------------------------------------------

_SEASONAL_PERIODS = (4, 7, 12, 24, 52, 168, 365)


def _trend(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    u = t / max(len(t) - 1, 1)
    kind = rng.choice(["none", "linear", "exponential", "piecewise"], p=[0.2, 0.35, 0.2, 0.25])
    if kind == "linear":
        return rng.normal(0.0, 2.0) * u
    if kind == "exponential":
        return np.expm1(rng.uniform(-2.0, 2.0) * u)
    if kind == "piecewise":
        knots = np.sort(rng.uniform(0.0, 1.0, rng.integers(1, 5)))
        slopes = rng.normal(0.0, 2.0, len(knots) + 1)
        return np.cumsum(slopes[np.searchsorted(knots, u)]) / max(len(t) - 1, 1)
    return np.zeros_like(u)


def _seasonality(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    usable = [p for p in _SEASONAL_PERIODS if 2 * p <= len(t)] or [2]
    total = np.zeros_like(t)
    for _ in range(int(rng.choice([0, 1, 2], p=[0.15, 0.55, 0.3]))):
        period = float(rng.choice(usable)) * (1.0 if rng.random() < 0.9 else rng.uniform(0.8, 1.2))
        harmonics = np.arange(1, rng.integers(1, 5) + 1)
        coef = rng.normal(size=(2, len(harmonics))) / harmonics
        angle = 2.0 * np.pi * t[:, None] * harmonics[None, :] / period
        total += rng.uniform(0.3, 1.5) * (np.cos(angle) @ coef[0] + np.sin(angle) @ coef[1])
    return total


def _ar_noise(rng: np.random.Generator, length: int, scale: float) -> np.ndarray:
    """Stationary AR(1)/AR(2) noise: convolution with the filter's impulse response, after a burn-in."""
    phi = [rng.uniform(-0.5, 0.95)] if rng.random() < 0.7 else [rng.uniform(0.2, 0.9), rng.uniform(-0.4, 0.0)]
    response = [1.0]
    while len(response) < 400 and (len(response) < 3 or abs(response[-1]) + abs(response[-2]) > 1e-6):
        response.append(sum(c * response[-1 - i] for i, c in enumerate(phi) if len(response) > i))
    shocks = rng.standard_normal(length + len(response))
    noise = np.convolve(shocks, response)[len(response): len(response) + length]
    return scale * noise / max(np.std(noise), 1e-12)


def _level_shifts(rng: np.random.Generator, length: int) -> np.ndarray:
    shifts = np.zeros(length)
    for position in rng.integers(1, length, rng.integers(1, 4)):
        shifts[position:] += rng.normal(0.0, 1.0)
    return shifts


def _spikes(rng: np.random.Generator, length: int) -> np.ndarray:
    spikes = np.zeros(length)
    count = max(1, int(length * rng.uniform(0.001, 0.01)))
    spikes[rng.integers(0, length, count)] = rng.choice([-1.0, 1.0], count) * rng.uniform(3.0, 8.0, count)
    return spikes


def _composite(rng: np.random.Generator, length: int) -> np.ndarray:
    t = np.arange(length, dtype=np.float64)
    trend, season = _trend(rng, t), _seasonality(rng, t)
    if rng.random() < 0.3:  # multiplicative: seasonal swing grows with the level
        series = (1.0 + 0.3 * trend) * season + trend
    else:
        series = trend + season
    series += _ar_noise(rng, length, rng.uniform(0.02, 0.6))
    if rng.random() < 0.25:
        series += _level_shifts(rng, length)
    if rng.random() < 0.15:
        series += _spikes(rng, length)
    return series


def _random_walk(rng: np.random.Generator, length: int) -> np.ndarray:
    heavy_tailed = rng.random() < 0.3
    steps = rng.standard_t(rng.uniform(2.5, 30.0), length) if heavy_tailed else rng.standard_normal(length)
    return np.cumsum(steps + rng.normal(0.0, 0.05))


def _intermittent(rng: np.random.Generator, length: int) -> np.ndarray:
    """Positive demand with zeros: Bernoulli occurrences times gamma sizes, sometimes seasonal."""
    t = np.arange(length, dtype=np.float64)
    rate = rng.uniform(0.05, 0.7) * np.exp(0.5 * _seasonality(rng, t) / 3.0)
    occurs = rng.random(length) < np.clip(rate, 0.0, 1.0)
    occurs[rng.integers(0, length)] = True  # never an all-zero series: it would teach nothing
    sizes = np.maximum(1.0, np.round(rng.gamma(rng.uniform(0.5, 5.0), 1.0, length) * rng.uniform(1.0, 20.0)))
    return np.where(occurs, sizes, 0.0)


def simple_series(rng: np.random.Generator, length: int) -> np.ndarray:
    kind = rng.choice(["composite", "random_walk", "intermittent"], p=[0.7, 0.15, 0.15])
    if kind == "intermittent":
        return _intermittent(rng, length)
    series = _composite(rng, length) if kind == "composite" else _random_walk(rng, length)
    if rng.random() < 0.3:  # positive-valued, sometimes with zeros at the bottom
        series = np.clip(series - np.quantile(series, rng.uniform(0.0, 0.1)), 0.0, None)
        return series * 10.0 ** rng.uniform(0.0, 3.0)
    level = rng.normal(0.0, 3.0) * (np.std(series) + 1e-3)  # offsets from near zero to far above
    return (series + level) * 10.0 ** rng.uniform(-1.0, 3.0)


# --------------------------------------------------------------------------------------------------------
# Corpus generation
# --------------------------------------------------------------------------------------------------------


_BLAS_THREAD_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                        "openblas_set_num_threads64_", "openblas_set_num_threads")


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """OpenBLAS threads make the small matmuls here ~10x slower on a busy machine (measured: 6.6 ms vs
    0.4 ms for 1024x96 @ 96x30 on 2 shared cores); generation parallelises over processes instead.
    Best effort through the loaded library (what threadpoolctl does); a no-op where it is not found."""
    setters = []
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
        for path in paths:
            library = ctypes.CDLL(path)
            for name in _BLAS_THREAD_SETTERS:
                setter = getattr(library, name, None)
                getter = getattr(library, name.replace("set_num", "get_num"), None)
                if setter is not None and getter is not None:
                    setters.append((setter, int(getter())))
                    setter(1)
                    break
    except OSError:
        pass
    try:
        yield
    finally:
        for setter, threads in setters:
            setter(threads)


def _series_kind(kind: str, index: int) -> str:
    # "mix" interleaves exactly 1:1 (even rows KernelSynth, odd rows simple).
    if kind == "mix":
        return "kernelsynth" if index % 2 == 0 else "simple"
    return kind


def _one_series(kind: str, index: int, min_length: int, max_length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _KIND_STREAM[kind], index])
    length = int(rng.integers(min_length, max_length + 1))
    series = kernelsynth_series(rng, length) if kind == "kernelsynth" else simple_series(rng, length)
    return series.astype(np.float32)


def _one_item(kind: str, index: int, min_length: int, max_length: int, seed: int) -> np.ndarray | dict:
    if kind in _MULTIVARIATE_KINDS:
        rng = np.random.default_rng([seed, _KIND_STREAM["multivariate"], index])
        length = int(rng.integers(min_length, max_length + 1))
        return multivariate_item(rng, length, with_covariates=kind == "multivariate_covariates")
    return _one_series(_series_kind(kind, index), index, min_length, max_length, seed)


def _generate_range(kind: str, start: int, stop: int, min_length: int, max_length: int, seed: int) -> list:
    with _single_threaded_blas():
        return [_one_item(kind, i, min_length, max_length, seed) for i in range(start, stop)]


def _check_arguments(count: int, min_length: int, max_length: int, num_workers: int) -> None:
    if count < 0:
        raise ValueError(f"the number of series must be >= 0, got {count}")
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= min_length <= max_length, got {min_length} and {max_length}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")


def _run_chunks(
    kind: str, count: int, min_length: int, max_length: int, seed: int, num_workers: int, progress: bool
) -> list:
    """Items 0..count-1 in order, in chunks; each item seeds itself, so workers cannot change the output."""
    _check_arguments(count, min_length, max_length, num_workers)
    bounds = [(s, min(s + _CHUNK_SIZE, count)) for s in range(0, count, _CHUNK_SIZE)]
    if num_workers == 1 or len(bounds) <= 1:
        parts = (_generate_range(kind, a, b, min_length, max_length, seed) for a, b in bounds)
        return _collect(parts, count, progress)
    # spawn, not fork: the caller may hold threads (torch, BLAS) that a fork would copy mid-state.
    with ProcessPoolExecutor(num_workers, mp_context=get_context("spawn")) as pool:
        n = len(bounds)
        parts = pool.map(_generate_range, [kind] * n, [a for a, _ in bounds], [b for _, b in bounds],
                         [min_length] * n, [max_length] * n, [seed] * n)
        return _collect(parts, count, progress)


def _collect(parts: Iterable[list], total: int, progress: bool) -> list:
    items: list = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="series", desc="synth")
    for part in parts:
        items.extend(part)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return items


def generate(
    kind: str, num_series: int, min_length: int, max_length: int, seed: int, num_workers: int = 1,
    progress: bool = False,
) -> list[np.ndarray]:
    """`num_series` float32 1-D series of `kind` ("kernelsynth", "simple" or "mix": the two 1:1), each
    with a length drawn uniformly in [min_length, max_length]. Identical for any `num_workers`."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; allowed: {', '.join(KINDS)}")
    return _run_chunks(kind, num_series, min_length, max_length, seed, num_workers, progress)


# --------------------------------------------------------------------------------------------------------
# Multivariate groups: variates with imposed dependence, and covariates that drive them
# --------------------------------------------------------------------------------------------------------

_MULTIVARIATE_KINDS = ("multivariate", "multivariate_covariates")
_MAX_LAG = 8


def _standardized(series: np.ndarray) -> np.ndarray:
    return (series - series.mean()) / max(float(series.std()), 1e-8)


def _shift(series: np.ndarray, lag: int, length: int) -> np.ndarray:
    """series delayed by `lag` steps, cut to `length`; the first values repeat the earliest one."""
    return np.concatenate([np.full(lag, series[0]), series[: length - lag]]) if lag else series[:length]


def _random_source(rng: np.random.Generator, length: int) -> np.ndarray:
    """A standardized univariate series, KernelSynth or simple with equal odds."""
    series = kernelsynth_series(rng, length) if rng.random() < 0.5 else simple_series(rng, length)
    return _standardized(series)


def _covariate(rng: np.random.Generator, length: int) -> np.ndarray:
    """A known-in-advance driver: promotion-like on/off blocks, a smooth series, or level steps."""
    kind = rng.choice(["blocks", "smooth", "steps"])
    if kind == "blocks":
        starts = rng.random(length) < rng.uniform(0.01, 0.08)
        return (np.convolve(starts, np.ones(int(rng.integers(1, 8))))[:length] > 0).astype(np.float64)
    if kind == "smooth":
        return _random_source(rng, length)
    return _level_shifts(rng, length)


def multivariate_item(rng: np.random.Generator, length: int, with_covariates: bool = False) -> dict:
    """One group: 2-5 variates = mixing matrix x lagged shared sources + a shared trend + own AR noise,
    each variate with its own scale and level; optionally 1-2 covariates (`feat_dynamic_real`, known in
    the future) that enter every variate with a random weight and lag. Values (variates, length) float32."""
    variates, sources = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    padded = length + _MAX_LAG
    latent = [_random_source(rng, padded) for _ in range(sources)]
    mixing = rng.normal(size=(variates, sources))
    lags = rng.integers(0, _MAX_LAG + 1, size=(variates, sources))
    target = np.zeros((variates, length))
    for v in range(variates):
        for k in range(sources):
            begin = _MAX_LAG - lags[v, k]  # variate v sees source k delayed by lags[v, k] steps
            target[v] += mixing[v, k] * latent[k][begin: begin + length]
    if rng.random() < 0.5:  # a trend all variates share, with their own loadings
        target += np.outer(rng.uniform(0.3, 2.0, variates), _trend(rng, np.arange(length, dtype=np.float64)))
    target += np.array([_ar_noise(rng, length, rng.uniform(0.05, 0.5)) for _ in range(variates)])
    item: dict = {}
    if with_covariates:
        covariates = np.array([_covariate(rng, length) for _ in range(int(rng.integers(1, 3)))])
        for covariate in covariates:
            lag, weights = int(rng.integers(0, 4)), rng.normal(0.0, 1.5, variates)
            target += np.outer(weights, _shift(covariate, lag, length))
        item["feat_dynamic_real"] = covariates.astype(np.float32)
    scales = 10.0 ** rng.uniform(-0.5, 2.0, variates)
    levels = rng.normal(0.0, 3.0, variates)
    item["target"] = ((target + levels[:, None]) * scales[:, None]).astype(np.float32)
    return item


def generate_multivariate(
    num_items: int, min_length: int, max_length: int, seed: int, covariates: bool = False,
    num_workers: int = 1, progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """`num_items` groups, each {"target": (variates, length)} and, with `covariates`, also
    {"feat_dynamic_real": (n_covariates, length)}; float32, identical for any `num_workers`."""
    kind = "multivariate_covariates" if covariates else "multivariate"
    return _run_chunks(kind, num_items, min_length, max_length, seed, num_workers, progress)


# --------------------------------------------------------------------------------------------------------
# Writing corpora (HuggingFace `datasets` folders)
# --------------------------------------------------------------------------------------------------------

_FIXED_STEPS = {
    "ms": (1, "ms"), "s": (1, "s"), "min": (1, "m"), "T": (1, "m"), "h": (1, "h"), "H": (1, "h"),
    "D": (1, "D"), "W": (7, "D"),
}
_CALENDAR_STEPS = {
    "M": (1, "M"), "MS": (1, "M"), "Q": (3, "M"), "QS": (3, "M"),
    "Y": (1, "Y"), "YS": (1, "Y"), "A": (1, "Y"),
}


def timestamp_values(start: str | np.datetime64, freq: str, lengths: np.ndarray) -> np.ndarray:
    """Concatenated datetime64[ms] timestamps of series that all begin at `start`. Calendar frequencies
    (M, Q, Y) step from the first day of the start's month/year, so they stay on period starts."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    position = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    if freq in _FIXED_STEPS:
        size, unit = _FIXED_STEPS[freq]
        values = np.datetime64(start, unit) + position * size * np.timedelta64(1, unit)
    elif freq in _CALENDAR_STEPS:
        size, unit = _CALENDAR_STEPS[freq]
        values = np.datetime64(start, unit) + position * size
    else:
        allowed = ", ".join([*_FIXED_STEPS, *_CALENDAR_STEPS])
        raise ValueError(f"unsupported frequency {freq!r}; allowed: {allowed}")
    return values.astype("datetime64[ms]")


def series_table(
    ids: Sequence[str], series: Sequence[np.ndarray], start: str | np.datetime64, freq: str
) -> pa.Table:
    """The hub's layout: `id` string, `timestamp` list<timestamp[ms]>, `target` list<float32>."""
    lengths = np.array([len(s) for s in series], dtype=np.int64)
    values = np.concatenate([np.asarray(s, dtype=np.float32) for s in series] or [np.zeros(0, np.float32)])
    return pa.table({
        "id": pa.array(list(ids), pa.string()),
        "timestamp": list_array(pa.array(timestamp_values(start, freq, lengths)), lengths),
        "target": list_array(pa.array(values, pa.float32()), lengths),
    })


def write_corpus(
    path: str | Path, series: list[np.ndarray], start: str = "2000-01-01", freq: str = "h"
) -> int:
    """Write 1-D series as a `datasets` folder (id, timestamp, target), atomically; returns the row count."""
    for index, values in enumerate(series):
        if np.ndim(values) != 1:
            raise ValueError(f"series {index} has shape {np.shape(values)}; write_corpus takes 1-D series")
    ids = [f"synth_{i}" for i in range(len(series))]
    save_table(series_table(ids, series, start, freq), path)
    return len(series)


def _nestedlist_array(blocks: Sequence[np.ndarray]) -> pa.Array:
    """list<list<float32>> from 2-D blocks (rows of equal length within a block)."""
    rows = [row for block in blocks for row in np.asarray(block, dtype=np.float32)]
    inner = list_array(pa.array(np.concatenate(rows or [np.zeros(0, np.float32)]), pa.float32()),
                        np.array([len(r) for r in rows], dtype=np.int64))
    return list_array(inner, np.array([len(block) for block in blocks], dtype=np.int64))


def write_multivariate_corpus(
    path: str | Path, items: list[dict[str, np.ndarray]], start: str = "2000-01-01", freq: str = "h"
) -> int:
    """Write groups from `generate_multivariate` (2-D `target`, optional 2-D `feat_dynamic_real`) as a
    `datasets` folder, atomically; returns the row count."""
    with_covariates = {"feat_dynamic_real" in item for item in items}
    if len(with_covariates) > 1:
        raise ValueError("either every item has 'feat_dynamic_real' or none does (one column schema)")
    for index, item in enumerate(items):
        shape = np.shape(item["target"])
        if len(shape) != 2:
            raise ValueError(f"item {index}: target has shape {shape}; expected (variates, length)")
        covariate_shape = np.shape(item.get("feat_dynamic_real", np.zeros((0, shape[1]))))
        if len(covariate_shape) != 2 or covariate_shape[1] != shape[1]:
            raise ValueError(f"item {index}: feat_dynamic_real has shape {covariate_shape}; expected "
                             f"(covariates, {shape[1]}) to match the target")
    lengths = np.array([item["target"].shape[1] for item in items], dtype=np.int64)
    columns = {
        "id": pa.array([f"synth_mv_{i}" for i in range(len(items))], pa.string()),
        "timestamp": list_array(pa.array(timestamp_values(start, freq, lengths)), lengths),
        "target": _nestedlist_array([item["target"] for item in items]),
    }
    if with_covariates == {True}:
        columns["feat_dynamic_real"] = _nestedlist_array([item["feat_dynamic_real"] for item in items])
    save_table(pa.table(columns), path)
    return len(items)
