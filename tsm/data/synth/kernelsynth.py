"""KernelSynth series: one path of a random GP kernel expression, sampled fast and exactly.

KernelSynth (Ansari et al. 2024, "Chronos", Appendix) draws 1..`max_kernels` kernels from the bank in
`tsm.data.synth.kernels`, combines them left to right with random `+` or `*`, and returns one GP path,
unscaled.

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
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache, lru_cache, reduce

import numpy as np

from tsm.data.synth.kernels import (
    Monomial,
    _cholesky_with_jitter,
    _diagonal,
    _periodic_product_row,
    _smooth_kernel_matrix,
    draw_kernel_expression,
)

_NODES = 96  # Chebyshev nodes for smooth factors: 1e-13 accuracy for up to five RBF(0.1) factors
_PERIOD_FFT_CACHED = 1 << 15  # common cycles up to this size keep their eigenvalues in memory
_PERIOD_FFT_MAX = 1 << 22
_CHOLESKY_MAX_LENGTH = 2048  # beyond this a length^3 factorisation costs seconds: use Fourier atoms
_FOURIER_TAIL = 1e-12
_EIG_FLOOR = 1e-13  # relative eigenvalue floor for the node covariance (its numerical rank)


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


def kernelsynth_series(rng: np.random.Generator, length: int, max_kernels: int = 5) -> np.ndarray:
    """One KernelSynth path (float64, unscaled): a random expression of up to `max_kernels` bank kernels."""
    return sample_expression(draw_kernel_expression(rng, max_kernels), length, rng)
