"""Building corpora: `generate` (KernelSynth, simple, or "mix", their 1:1 interleave) and
`generate_multivariate`, in parallel worker processes, and writing them as `datasets` folders.

"mix" is the default training corpus: KernelSynth alone helped WQL but not MASE on M1/M3/Tourism
(shared/DESIGN.md). Every series has its own seed derived from (seed, kind, index), so the output does not
depend on `num_workers` or on how the work is chunked.
"""
from __future__ import annotations

import ctypes
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa

from tsm.data.synth.kernelsynth import kernelsynth_series
from tsm.data.synth.multivariate import _MULTIVARIATE_KINDS, multivariate_item
from tsm.data.synth.simple import simple_series
from tsm.data.writer import list_array, save_table

KINDS = ("kernelsynth", "simple", "mix")
_KIND_STREAM = {"kernelsynth": 1, "simple": 2, "multivariate": 3}  # separate seed streams per generator
_CHUNK_SIZE = 256  # series per parallel task: big enough to amortise pickling, small enough to balance


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


def generate_multivariate(
    num_items: int, min_length: int, max_length: int, seed: int, covariates: bool = False,
    num_workers: int = 1, progress: bool = False,
) -> list[dict[str, np.ndarray]]:
    """`num_items` groups, each {"target": (variates, length)} and, with `covariates`, also
    {"feat_dynamic_real": (n_covariates, length)}; float32, identical for any `num_workers`."""
    kind = "multivariate_covariates" if covariates else "multivariate"
    return _run_chunks(kind, num_items, min_length, max_length, seed, num_workers, progress)


# ---- Writing corpora (HuggingFace `datasets` folders) ------------------------------------------------

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
