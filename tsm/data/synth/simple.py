"""The "simple" series: random mixtures of trend (linear, exponential, piecewise linear), zero to two
seasonalities (periods 4..365, 1-4 harmonics, sometimes multiplicative), AR(1)/AR(2) noise, level shifts
and spikes; or random walks (Gaussian or heavy-tailed steps); or intermittent positive demand with zeros.
30% are made positive. Levels and scales vary over four orders of magnitude.
"""
from __future__ import annotations

import numpy as np

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
    """One simple series (float64): composite 70%, random walk 15%, intermittent demand 15%."""
    kind = rng.choice(["composite", "random_walk", "intermittent"], p=[0.7, 0.15, 0.15])
    if kind == "intermittent":
        return _intermittent(rng, length)
    series = _composite(rng, length) if kind == "composite" else _random_walk(rng, length)
    if rng.random() < 0.3:  # positive-valued, sometimes with zeros at the bottom
        series = np.clip(series - np.quantile(series, rng.uniform(0.0, 0.1)), 0.0, None)
        return series * 10.0 ** rng.uniform(0.0, 3.0)
    level = rng.normal(0.0, 3.0) * (np.std(series) + 1e-3)  # offsets from near zero to far above
    return (series + level) * 10.0 ** rng.uniform(-1.0, 3.0)
