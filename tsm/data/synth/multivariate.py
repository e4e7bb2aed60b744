"""Multivariate groups: 2-5 variates from 1-3 shared latent sources with a random mixing matrix and
per-variate lags, an optional shared trend and own AR noise; with covariates, 1-2 known-in-future drivers
(`feat_dynamic_real`: on/off blocks, smooth series or level steps) enter every variate with a random weight
and lag 0-3. The sources and drivers are KernelSynth and simple series, built from the same parts.
"""
from __future__ import annotations

import numpy as np

from tsm.data.synth.kernelsynth import kernelsynth_series
from tsm.data.synth.simple import _ar_noise, _level_shifts, _trend, simple_series

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
