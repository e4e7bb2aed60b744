"""TSMixup (Ansari et al. 2024, "Chronos", Section 5.1 and Algorithm 1): new training series as convex
combinations of mean-scaled windows of existing ones.

For each output series: draw k uniformly in 1..max_components; draw k source series, each from a corpus
chosen uniformly (so a small corpus counts as much as a large one, as in the paper) and a series chosen
uniformly within it; draw the length l uniformly in [min_length, min(max_length, shortest source)];
cut a window of l steps at a uniform position from each source; divide each window by its mean absolute
value; combine them with weights drawn from Dirichlet(alpha, ..., alpha).

Multivariate rows contribute one variate, drawn uniformly; covariates are not mixed. Missing values stay
missing (a NaN in a window is a NaN in the mix). Every output series has its own seed derived from
(seed, index), so the corpus does not depend on the number of worker processes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from tsm.data.arrow import ArrowCorpus, DataError
from tsm.data.synth.corpus import series_table
from tsm.data.writer import save_table

_CHUNK_SIZE = 512  # series per parallel task


@dataclass(frozen=True)
class MixupSettings:
    num_series: int
    max_components: int = 3  # the paper's K
    alpha: float = 1.5  # Dirichlet concentration of the mixing weights (the paper's)
    min_length: int = 128
    max_length: int = 2048
    seed: int = 0

    def check(self) -> None:
        if self.num_series < 1:
            raise DataError(f"tsmixup: --num-series must be >= 1, got {self.num_series}")
        if self.max_components < 1:
            raise DataError(f"tsmixup: --max-components must be >= 1, got {self.max_components}")
        if not self.alpha > 0:
            raise DataError(f"tsmixup: --alpha must be > 0, got {self.alpha}")
        if not 2 <= self.min_length <= self.max_length:
            raise DataError(f"tsmixup: need 2 <= --min-length <= --max-length, got {self.min_length} and "
                            f"{self.max_length}")


@dataclass
class Mixed:
    """One mixed series and how it was made (the tests check the recipe, the corpus keeps the values)."""

    values: np.ndarray  # float32, (length,)
    weights: np.ndarray  # Dirichlet weights, one per component
    sources: list[tuple[int, int, int, int]]  # (corpus, row, variate, window start) per component


class _Sources:
    """The input corpora, their series long enough to mix, opened lazily (memory-mapped) per process."""

    def __init__(self, paths: Sequence[str | Path], min_length: int):
        self.paths = [str(p) for p in paths]
        self.corpora = [ArrowCorpus(p) for p in self.paths]
        self.usable = [np.flatnonzero(c.lengths >= min_length) for c in self.corpora]
        for corpus, usable in zip(self.corpora, self.usable, strict=True):
            if len(usable) == 0:
                longest = int(corpus.lengths.max()) if len(corpus) else 0
                raise DataError(f"tsmixup: {corpus.source}: no series has the {min_length} steps of --min-length "
                                f"(longest: {longest}); lower --min-length or leave this corpus out")


def mix_one(sources: _Sources, settings: MixupSettings, index: int) -> Mixed:
    """Output series `index`: a pure function of (settings.seed, index) and the input corpora."""
    rng = np.random.default_rng([settings.seed, index])
    k = int(rng.integers(1, settings.max_components + 1))
    picks = []
    for _ in range(k):
        c = int(rng.integers(len(sources.corpora)))
        row = int(sources.usable[c][rng.integers(len(sources.usable[c]))])
        target = sources.corpora[c].target.row(row)
        variate = int(rng.integers(target.shape[0]))
        picks.append((c, row, variate, target[variate]))
    longest_allowed = min(settings.max_length, min(len(values) for *_, values in picks))
    length = int(rng.integers(settings.min_length, longest_allowed + 1))
    weights = rng.dirichlet(np.full(k, settings.alpha))
    mixed = np.zeros(length, dtype=np.float64)
    recipe = []
    for (c, row, variate, values), weight in zip(picks, weights, strict=True):
        start = int(rng.integers(0, len(values) - length + 1))
        window = values[start : start + length].astype(np.float64)
        scale = np.nanmean(np.abs(window)) if not np.isnan(window).all() else 0.0
        # An all-zero window has no scale: it adds zeros, whatever its weight.
        mixed += weight * (window / scale if scale > 0 else window)
        recipe.append((c, row, variate, start))
    return Mixed(mixed.astype(np.float32), weights, recipe)


_WORKER_SOURCES: _Sources | None = None


def _open_in_worker(paths: list[str], min_length: int) -> None:
    global _WORKER_SOURCES
    _WORKER_SOURCES = _Sources(paths, min_length)


def _mix_range(settings: MixupSettings, start: int, stop: int) -> list[np.ndarray]:
    assert _WORKER_SOURCES is not None
    return [mix_one(_WORKER_SOURCES, settings, i).values for i in range(start, stop)]


def tsmixup(paths: Sequence[str | Path], settings: MixupSettings, num_workers: int = 1,
            progress: bool = False) -> list[np.ndarray]:
    """`settings.num_series` mixed float32 series from the corpora at `paths`; identical for any
    `num_workers`."""
    settings.check()
    if not paths:
        raise DataError("tsmixup: give at least one --input corpus")
    if num_workers < 1:
        raise DataError(f"tsmixup: --workers must be >= 1, got {num_workers}")
    sources = _Sources(paths, settings.min_length)  # opened here first: bad input fails before any worker starts
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=settings.num_series, unit="series", desc="tsmixup")
    bounds = [(a, min(a + _CHUNK_SIZE, settings.num_series)) for a in range(0, settings.num_series, _CHUNK_SIZE)]
    series: list[np.ndarray] = []
    if num_workers == 1 or len(bounds) == 1:
        for a, b in bounds:
            series.extend(mix_one(sources, settings, i).values for i in range(a, b))
            if bar is not None:
                bar.update(b - a)
    else:
        # spawn, not fork: the caller may hold threads (torch, BLAS) that a fork would copy mid-state.
        with ProcessPoolExecutor(num_workers, mp_context=get_context("spawn"), initializer=_open_in_worker,
                                 initargs=(sources.paths, settings.min_length)) as pool:
            for (a, b), part in zip(bounds, pool.map(_mix_range, [settings] * len(bounds),
                                                     *zip(*bounds, strict=True)), strict=True):
                series.extend(part)
                if bar is not None:
                    bar.update(b - a)
    if bar is not None:
        bar.close()
    return series


def write_tsmixup(paths: Sequence[str | Path], output: str | Path, settings: MixupSettings,
                  num_workers: int = 1, progress: bool = False) -> str:
    """Mix and write the corpus (id, timestamp, target) atomically; returns a one-line summary."""
    series = tsmixup(paths, settings, num_workers, progress)
    ids = [f"tsmixup_{i}" for i in range(len(series))]
    save_table(series_table(ids, series, "2000-01-01", "h"), output)
    lengths = np.array([len(s) for s in series])
    missing = int(sum(np.isnan(s).sum() for s in series))
    note = f", {missing:,} missing values carried over" if missing else ""
    return (f"wrote {len(series):,} TSMixup series (lengths {lengths.min()}-{lengths.max()}, mean "
            f"{math.floor(lengths.mean())}) from {len(paths)} corpora to {output}{note}")
