"""The KernelSynth kernel bank (Ansari et al. 2024, "Chronos", Appendix), the paper's random composition of
its kernels, the exact covariance matrix of an expression and the plain Cholesky sampler: the reference that
the fast sampler in `tsm.data.synth.kernelsynth` is tested and benchmarked against.

The bank: 21 periodic kernels with the paper's periods, dot product, RBF, rational quadratic, white,
constant. As in the paper x = linspace(0, 1, length), so RBF / rational-quadratic / dot-product scales are
relative to the series' span at every length; periods are exactly p steps (the paper's p / 1024 on a grid
of step 1/1023 is p * 1023/1024 steps).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


def _periodic_product_row(periods: tuple[float, ...], lags: np.ndarray) -> np.ndarray:
    """prod_i exp(-2 sin^2(pi lag / p_i)) at integer lags; each factor is evaluated over one period only."""
    row = np.ones(len(lags))
    for period in periods:
        one_period = np.exp(-2.0 * np.sin(np.pi * np.arange(int(period)) / period) ** 2)
        row *= one_period[lags % int(period)]
    return row


def _cholesky_with_jitter(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor of cov + jitter * I, the jitter starting at 1e-10 of the mean variance and growing
    tenfold until the factorisation succeeds (GP kernel matrices here are often numerically singular)."""
    jitter = 1e-10 * max(float(np.mean(np.diag(cov))), 1e-12)
    while True:
        try:
            return np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
        except np.linalg.LinAlgError:
            jitter *= 10.0


def sample_expression_cholesky(
    monomials: Sequence[Monomial], length: int, rng: np.random.Generator
) -> np.ndarray:
    """The plain reference sampler: full kernel matrix, one Cholesky (with jitter), one matmul."""
    return _cholesky_with_jitter(kernel_matrix(monomials, length)) @ rng.standard_normal(length)
