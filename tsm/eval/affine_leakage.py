"""Transformed copies: a benchmark series found again after an affine change, half-precision rounding or a cut.

Training pipelines rarely copy a series bit for bit: Chronos' training and TSMixup divide each series by its
mean absolute value, others z-normalise it or change its unit (x1000, as M3 did with M1's series), store it
as float16/bfloat16, and keep a window of it. Each is `copy = a * values + b` (a > 0), rounded, over a
stretch of the series. Two stages find these:

1. Candidates. Every run of `SHAPE_WINDOW` differences (RUN_VALUES values) is reduced to its shape: the
   differences divided by the largest one's size (invariant to a and b) and quantised to `LEVELS` levels,
   packed into a 32-bit key. Differences, not values: a random walk's or a sales series' steps are nearly
   independent, so their shapes are rare, where coarse levels of the values of one are shared by many.
   Rounding moves a difference by up to ~eps of the largest one, which can cross a level boundary: on the
   benchmark side (small), the MAX_AMBIGUOUS differences closest to a boundary within eps are indexed both
   ways, so the corpus side computes one key per run (vectorised) and a rounded copy meets most of its runs.
   Keys shared by more than `MAX_KEY_ENTRIES` benchmark runs are common shapes: they are not indexed.
2. Verification. Each candidate pair of runs is fitted `corpus = a * benchmark + b` by least squares; it
   passes when a > 0, every residual is within half-precision rounding, and the run holds SEED_BITS of
   detail. A passing pair is grown along its alignment, within the corpus series, as far as the fit holds
   (at float32 precision if it holds there, else at half), refitted on that stretch and checked again. The
   stretch must also be informative (detail_bits): a straight line is the affine image of every other one,
   and any smooth curve follows a smooth stretch within a coarse tolerance, so its detail beyond the copy's
   own residual must reach MIN_DETAIL_BITS; a half-precision stretch must also be MIN_HALF_STRETCH long.
   Constant runs, KernelSynth's trends and smooth kernels and random walks do not pass (tests/eval).

What it cannot see: a sum of two or more series (TSMixup with several components), a copy with another
sign (a < 0), noise added or values resampled, copies shorter than RUN_VALUES, and in half precision a series
whose variation is within the rounding of its level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_WINDOW = 16  # differences per shape: 16 x 2 bits make a 32-bit key (enough to be rare, see below)
RUN_VALUES = SHAPE_WINDOW + 1  # values per run: SHAPE_WINDOW differences
LEVELS = 4  # quantisation levels of a normalised difference (-1..1)
MAX_AMBIGUOUS = 4  # differences near a level boundary flipped per indexed run (2^4 keys)
MAX_KEY_ENTRIES = 48  # a shape this common among the benchmark's runs tells nothing: not indexed
HALF_ERROR = 2.0**-9  # bfloat16's relative rounding error (round to nearest; float16's is 2^-11)
SINGLE_ERROR = 2.0**-21  # float32 storage and float32 arithmetic on it (a few roundings)
TOLERANCE = 2.0  # a residual may be TOLERANCE x the rounding error of the values involved
SEED_BITS = 1.0  # a candidate run must hold this much to be grown (most smooth runs hold none)
MIN_DETAIL_BITS = 6.0  # a verified stretch must hold this much detail beyond its rounding (detail_bits)
# Related real series (one industry's sales in two regions) can move together within half-precision rounding
# over a season or so: a half-precision copy must be longer than that.
MIN_HALF_STRETCH = 32
LEVEL_BITS = 2
EXACT, HALF = "float32", "half"  # the precision a copy was verified at


def corpus_keys(values: np.ndarray) -> np.ndarray:
    """The shape key of every run of SHAPE_WINDOW + 1 values, at its first value (int64; -1 for a flat run or
    one holding NaN): its SHAPE_WINDOW differences divided by the largest one's size, quantised."""
    x = np.asarray(values, dtype=np.float32)
    count = len(x) - SHAPE_WINDOW
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    steps = np.diff(x)
    size = sliding_max(np.abs(steps), SHAPE_WINDOW)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale = np.float32(LEVELS / 2) / size
        valid = np.isfinite(scale) & (size > 0)
        scale[~valid] = 0
        keys = np.zeros(count, dtype=np.uint32)
        level = np.empty(count, dtype=np.float32)
        for offset in range(SHAPE_WINDOW):
            np.multiply(steps[offset: offset + count], scale, out=level)
            level += np.float32(LEVELS / 2)
            np.clip(level, 0, LEVELS - 1, out=level)  # the largest difference lands on LEVELS: the top level
            keys <<= np.uint32(LEVEL_BITS)
            keys |= level.astype(np.uint32)
    result = keys.astype(np.int64)
    result[~valid] = -1
    return result


def sliding_max(values: np.ndarray, window: int) -> np.ndarray:
    """max(values[i:i + window]) for every i (window a power of two: log2(window) passes)."""
    result = values
    width = 1
    while width < window:
        result = np.maximum(result[:-width], result[width:])
        width *= 2
    return result


@dataclass
class ShapeEntries:
    """Indexed runs: key, dataset, series, start, whether the run reaches the scored steps."""

    keys: np.ndarray
    datasets: np.ndarray
    series: np.ndarray
    starts: np.ndarray
    in_test: np.ndarray


def series_keys(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keys, run starts) of one benchmark series: the keys a copy of each run is likely to have under
    rounding (several per run, near level boundaries)."""
    keys, series, starts = dataset_keys([values])
    return keys, starts


def dataset_keys(values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys, series, run starts) of a dataset's series, all runs at once."""
    lengths = np.array([len(v) for v in values], np.int64)
    if not len(values) or lengths.max(initial=0) <= SHAPE_WINDOW:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    x = np.concatenate([np.asarray(v, np.float64) for v in values])
    series_of_value = np.repeat(np.arange(len(values)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    finite = np.isfinite(x)
    # |values| of each series (a shift such as z-normalising moves values by up to the series' own size)
    magnitude = np.maximum.reduceat(np.where(finite, np.abs(x), 0.0), first) if len(x) else np.zeros(0)
    steps = np.lib.stride_tricks.sliding_window_view(np.diff(x), SHAPE_WINDOW)
    run_series = series_of_value[: len(steps)]
    starts = np.arange(len(steps)) - first[run_series]
    inside = starts + RUN_VALUES <= lengths[run_series]  # runs across two series are none
    clean = np.lib.stride_tricks.sliding_window_view(finite, RUN_VALUES).all(axis=1)[: len(steps)]
    size = np.abs(steps).max(axis=1)
    usable = inside & clean & (size > 1e-9 * np.maximum(magnitude[run_series], 1e-30))
    steps, size, run_series, starts = steps[usable], size[usable], run_series[usable], starts[usable]
    scaled = steps / size[:, None] * (LEVELS / 2) + LEVELS / 2
    levels = np.clip(np.floor(scaled), 0, LEVELS - 1).astype(np.int64)
    nearest = np.clip(np.rint(scaled), 1, LEVELS - 1)  # the closest interior boundary
    distance = np.abs(scaled - nearest)
    spread = size / (LEVELS / 2)
    # Rounding error in level units: each value moves by up to error * 2 * magnitude (scaled, maybe shifted),
    # a difference by twice that, and so does the largest difference that divides it. A run's values closer
    # to a boundary than that may land on either side: its keys flip the MAX_AMBIGUOUS closest both ways (a
    # value further in flips rarely, and a copy needs only one of its many runs to meet its key). Flips at
    # distinct positions give distinct keys: no key repeats within a run.
    eps = 10 * HALF_ERROR * magnitude[run_series] / spread
    closeness = np.where(distance < eps[:, None], distance / eps[:, None], np.inf)
    order = np.argsort(closeness, axis=1, kind="stable")[:, :MAX_AMBIGUOUS]
    count = (np.take_along_axis(closeness, order, axis=1) < np.inf).sum(axis=1)
    keys, key_series, key_starts = [], [], []
    for n in np.unique(count):
        rows = np.flatnonzero(count == n)
        base = _pack(levels[rows])
        if n:
            positions = order[rows, :n]
            current = np.take_along_axis(levels[rows], positions, axis=1)
            other = np.where(np.take_along_axis(nearest[rows], positions, axis=1) > current, current + 1, current - 1)
            weights = np.left_shift(np.int64(1), LEVEL_BITS * (SHAPE_WINDOW - 1 - positions))
            combos = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1
            variants = base[:, None] + ((other - current) * weights) @ combos.T
        else:
            variants = base[:, None]
        keys.append(variants.ravel())
        key_series.append(np.repeat(run_series[rows], variants.shape[1]))
        key_starts.append(np.repeat(starts[rows], variants.shape[1]))
    return np.concatenate(keys), np.concatenate(key_series), np.concatenate(key_starts)


def _pack(levels: np.ndarray) -> np.ndarray:
    weights = np.left_shift(np.int64(1), LEVEL_BITS * np.arange(SHAPE_WINDOW - 1, -1, -1, dtype=np.int64))
    return levels @ weights


def build_entries(datasets: list[list[tuple[np.ndarray, int]]]) -> tuple[ShapeEntries, int]:
    """Every benchmark run's keys, sorted by key, without the common shapes; and how many keys were dropped."""
    parts = []
    for d, series in enumerate(datasets):
        keys, which, starts = dataset_keys([values for values, _ in series])
        test_starts = np.array([start for _, start in series], np.int64)
        if len(keys):
            parts.append((keys, np.full(len(keys), d, np.int32), which.astype(np.int32), starts,
                          starts + RUN_VALUES > test_starts[which]))
    if not parts:
        empty = np.zeros(0, np.int64)
        return ShapeEntries(empty, empty.astype(np.int32), empty.astype(np.int32), empty, empty.astype(bool)), 0
    columns = [np.concatenate(column) for column in zip(*parts, strict=True)]
    order = np.argsort(columns[0])
    columns = [column[order] for column in columns]
    first = np.flatnonzero(np.r_[True, columns[0][1:] != columns[0][:-1]])  # where each key's entries begin
    counts = np.diff(np.r_[first, len(order)])
    keep = np.repeat(counts, counts) <= MAX_KEY_ENTRIES
    return ShapeEntries(*[column[keep] for column in columns]), int((~keep).sum())


def affine_fit(benchmark: np.ndarray, corpus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise least squares corpus = a * benchmark + b: (a, b, residuals)."""
    b_mean = benchmark.mean(axis=-1, keepdims=True)
    c_mean = corpus.mean(axis=-1, keepdims=True)
    b_centred = benchmark - b_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (b_centred * (corpus - c_mean)).sum(axis=-1) / (b_centred * b_centred).sum(axis=-1)
    slope = np.nan_to_num(slope, nan=0.0, posinf=0.0, neginf=0.0)
    intercept = c_mean[..., 0] - slope * b_mean[..., 0]
    residuals = corpus - slope[..., None] * benchmark - intercept[..., None]
    return slope, intercept, residuals


def allowed_error(benchmark: np.ndarray, corpus: np.ndarray, slope: np.ndarray, error: float) -> np.ndarray:
    """Per value: the residual a copy stored at relative precision `error` may show after the fit: its own
    rounding (relative to the stored value, and spread over the run by the fit) and the float32 arithmetic
    of the transform before it (relative to the values it started from: a shift can cancel most of them)."""
    stored = np.abs(corpus).max(axis=-1, keepdims=True)
    started = np.abs(slope)[..., None] * np.abs(benchmark).max(axis=-1, keepdims=True)
    return TOLERANCE * (error * (np.abs(corpus) + stored) + SINGLE_ERROR * (stored + started))


def verify_runs(benchmark: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    """Which candidate pairs of runs (rows) are an affine image (a > 0) within half-precision rounding, with
    at least SEED_BITS of detail (detail_bits, vectorised: smooth runs match too many others to be seeds)."""
    slope, _, residuals = affine_fit(benchmark, corpus)
    fits = (slope > 0) & (np.abs(residuals) <= allowed_error(benchmark, corpus, slope, HALF_ERROR)).all(axis=-1)
    band = 4 * np.maximum(np.abs(residuals).max(axis=-1), TOLERANCE * SINGLE_ERROR * np.abs(corpus).max(axis=-1))
    best = np.zeros(len(slope))
    for lag in (1, 2, 4):
        centre = np.arange(lag, benchmark.shape[-1] - lag, lag)
        curvature = np.abs(benchmark[:, centre + lag] - 2 * benchmark[:, centre] + benchmark[:, centre - lag])
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = slope[:, None] * curvature / band[:, None]
        best = np.maximum(best, np.log2(np.maximum(np.nan_to_num(ratio), 1.0)).sum(axis=-1))
    return fits & (best >= SEED_BITS)


@dataclass(frozen=True)
class Stretch:
    """A verified copy: benchmark positions [start, stop) found, at `precision` (EXACT or HALF)."""

    start: int
    stop: int
    precision: str


def verify_stretch(benchmark: np.ndarray, corpus: np.ndarray, offset: int, seed: int) -> Stretch | None:
    """Grow a verified run along its alignment (corpus[i] ~ benchmark[i + offset]; the run starts at corpus
    position `seed`) as far as the fit holds, refit, and accept the stretch if it holds and is informative."""
    lo, hi = max(0, -offset), min(len(corpus), len(benchmark) - offset)
    b_all = np.asarray(benchmark[lo + offset: hi + offset], np.float64)
    c_all = np.asarray(corpus[lo:hi], np.float64)
    seed -= lo
    b_seed, c_seed = b_all[seed: seed + RUN_VALUES], c_all[seed: seed + RUN_VALUES]
    for error, precision in ((SINGLE_ERROR, EXACT), (HALF_ERROR, HALF)):
        slope, intercept, residuals = affine_fit(b_seed, c_seed)
        if slope <= 0 or (np.abs(residuals) > allowed_error(b_seed, c_seed, slope, error)).any():
            continue
        with np.errstate(invalid="ignore"):
            fits = np.abs(c_all - slope * b_all - intercept) <= allowed_error(b_all, c_all, slope, error)
        start, stop = seed, seed + RUN_VALUES
        while start > 0 and fits[start - 1]:
            start -= 1
        while stop < len(fits) and fits[stop]:
            stop += 1
        b, c = b_all[start:stop], c_all[start:stop]
        slope, intercept, residuals = affine_fit(b, c)
        tolerance = allowed_error(b, c, slope, error)
        if slope <= 0 or (np.abs(residuals) > tolerance).any():
            b, c = b_seed, c_seed
            start, stop = seed, seed + RUN_VALUES
            slope, intercept, residuals = affine_fit(b, c)
            tolerance = allowed_error(b, c, slope, error)
        long_enough = precision == EXACT or stop - start >= MIN_HALF_STRETCH
        if long_enough and detail_bits(b, slope, residuals, TOLERANCE * SINGLE_ERROR * np.abs(c)) >= MIN_DETAIL_BITS:
            return Stretch(start + lo + offset, stop + lo + offset, precision)
        return None
    return None


def detail_bits(benchmark: np.ndarray, slope: float, residuals: np.ndarray, floor: np.ndarray) -> float:
    """How unlikely an unrelated series is to follow the stretch as closely as the copy does: log2 of its
    second differences (in corpus units) over the band the largest residual leaves a second difference (4x),
    summed over values `lag` apart, at the lag (1, 2, 4, ...) that gives most. Smooth stretches (lines,
    KernelSynth's kernels) score near 0 at every lag that fits in a short stretch: any smooth curve can follow
    them that closely; a long stretch shows its shape at the longer lags even where rounding hides its detail."""
    band = 4 * max(float(np.abs(residuals).max()), float(floor.max()))
    best = 0.0
    lag = 1
    while 2 * lag < len(benchmark):
        centre = np.arange(lag, len(benchmark) - lag, lag)
        curvature = slope * np.abs(benchmark[centre + lag] - 2 * benchmark[centre] + benchmark[centre - lag])
        best = max(best, float(np.log2(np.maximum(curvature / band, 1.0)).sum()))
        lag *= 2
    return best
