"""Series-level leakage: which benchmark series a training corpus holds, whatever it is called.

A corpus can hold a benchmark's series under another name, converted (another file format, float64 to
float32) or truncated before the test window: the name and fingerprint checks of tsm.eval.regime miss all
of these. Here every run of `window` consecutive values of every benchmark series is hashed (values as
float32, so conversions compare equal), and every run of the same length in the training corpora is
looked up among them. A benchmark series counts as found when a run inside its history, or one that
reaches into its test region (the steps the benchmark scores), appears in a corpus.

Runs with fewer than `window // 2` distinct values (flat stretches, a zero-padded start) are not indexed:
they occur in unrelated series by chance. The corpora are scanned in place (memory-mapped Arrow, one
vectorised pass per chunk; runs that straddle two series are hashed too, and match nothing).

Those are the exact copies. The same pass also looks for transformed ones (tsm.eval.affine_leakage): the
series scaled and shifted (mean-scaling as Chronos and TSMixup do, z-normalising, x1000), rounded to
float16/bfloat16, cut. Each dataset reports both apart: a series found bit for bit is an exact copy, one
found only through its shape a transformed copy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsm.data.arrow import ArrowCorpus
from tsm.eval import affine_leakage as shapes

logger = logging.getLogger("tsm")

WINDOW = 8  # values per hashed run: short enough for 4-6-step yearly test windows to take part
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash is a bijection per step
_SHAPE_PREFILTER_BITS = 29
_PREFILTER_BITS = 24  # a 16 MiB table of the hashes' top bits rejects most lookups before the binary search


def _canonical_bits(values: np.ndarray) -> np.ndarray:
    """float32 bit patterns, with -0.0 as 0.0 and every NaN as one NaN (equal values, equal bits)."""
    as_float = np.asarray(values, dtype=np.float32) + np.float32(0.0)  # -0.0 + 0.0 = +0.0
    bits = as_float.view(np.uint32).astype(np.uint64)
    bits[np.isnan(as_float)] = np.uint64(0x7FC00000)
    return bits


def run_hashes(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """The hash of every run of `window` consecutive values (len(values) - window + 1 of them), uint64."""
    bits = _canonical_bits(values)
    count = len(bits) - window + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    hashes = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):  # arithmetic mod 2^64 is the point
        for offset in range(window):
            hashes = hashes * _MULTIPLIER + bits[offset : offset + count]
        hashes ^= hashes >> np.uint64(29)  # mix the high bits the prefilter reads
        hashes *= _MULTIPLIER
    return hashes


def _informative(values: np.ndarray, window: int) -> np.ndarray:
    """Per run: at least window // 2 distinct values (sorting each run is cheap: benchmarks are small)."""
    runs = np.lib.stride_tricks.sliding_window_view(np.asarray(values, dtype=np.float32), window)
    ordered = np.sort(runs, axis=1)
    distinct = 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1)
    return distinct >= max(window // 2, 2)


@dataclass
class DatasetLeakage:
    """One benchmark dataset against the scanned corpora."""

    name: str
    series: int  # series with at least one indexed run
    found_history: set[int] = field(default_factory=set)
    found_test: set[int] = field(default_factory=set)
    in_corpus: dict[str, set[int]] = field(default_factory=dict)  # corpus -> series of this dataset found in it
    found_exact: set[int] = field(default_factory=set)  # some run bit for bit (as float32)
    found_shape: set[int] = field(default_factory=set)  # an affine image (scaled, shifted, rounded) of a stretch
    found_half: set[int] = field(default_factory=set)  # of found_shape: verified only at half precision

    @property
    def corpora(self) -> dict[str, int]:
        return {corpus: len(series) for corpus, series in self.in_corpus.items()}

    @property
    def found(self) -> int:
        return len(self.found_history | self.found_test)

    @property
    def share(self) -> float:
        return self.found / self.series if self.series else 0.0

    @property
    def transformed(self) -> set[int]:
        """Series found only as a transformed copy (no run of theirs is in a corpus bit for bit)."""
        return self.found_shape - self.found_exact

    def summary(self) -> str:
        """What was found, without the dataset's name (tsm evaluate's regime reason)."""
        if not self.found:
            return f"none of {self.series:,} series found in the training corpora"
        where = ", ".join(f"'{c}' ({n:,})" for c, n in sorted(self.corpora.items(), key=lambda kv: -kv[1]))
        half = len(self.transformed & self.found_half)
        return (f"{self.found:,} of {self.series:,} series ({self.share:.1%}) found in the training corpora: "
                f"{len(self.found_exact):,} exact copies, {len(self.transformed):,} transformed (scaled or "
                f"shifted{f', {half:,} rounded to half precision' if half else ''}); "
                f"{len(self.found_test):,} with test-window values, {len(self.found_history):,} with history; "
                f"in {where}")

    def as_json(self) -> dict:
        """The findings as `tsm leakage --output` writes them."""
        return {"dataset": self.name, "series": self.series, "found": self.found, "share": self.share,
                "found_exact": len(self.found_exact), "found_transformed": len(self.transformed),
                "share_exact": len(self.found_exact) / self.series if self.series else 0.0,
                "share_transformed": len(self.transformed) / self.series if self.series else 0.0,
                "found_transformed_half_precision": len(self.transformed & self.found_half),
                "found_with_test_window": len(self.found_test), "found_history": len(self.found_history),
                "corpora": self.corpora}

    def describe(self) -> str:
        return f"{self.name}: {self.summary()}"


class BenchmarkIndex:
    """The hashed runs of a benchmark's series, each tagged with its dataset, series and region."""

    def __init__(self, datasets: dict[str, list[tuple[np.ndarray, int]]], window: int = WINDOW,
                 transformed: bool = True):
        """`datasets`: name -> [(series values, test start)], the test region being values[test_start:].
        `transformed`: also look for scaled, shifted, rounded copies (tsm.eval.affine_leakage)."""
        self.window = window
        hashes, dataset_ids, series_ids, in_test = [], [], [], []
        self.results: list[DatasetLeakage] = []
        for d, (name, series) in enumerate(datasets.items()):
            indexed = 0
            for s, (values, test_start) in enumerate(series):
                if len(values) < window:
                    continue
                keep = _informative(values, window)
                if not keep.any():
                    continue
                indexed += 1
                starts = np.flatnonzero(keep)
                hashes.append(run_hashes(values, window)[starts])
                dataset_ids.append(np.full(len(starts), d, dtype=np.int32))
                series_ids.append(np.full(len(starts), s, dtype=np.int32))
                in_test.append(starts + window > test_start)  # the run reaches into the scored steps
            self.results.append(DatasetLeakage(name, indexed))
        all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
        order = np.argsort(all_hashes, kind="stable")
        self.hashes = all_hashes[order]
        self.dataset_ids = np.concatenate(dataset_ids)[order] if hashes else np.zeros(0, np.int32)
        self.series_ids = np.concatenate(series_ids)[order] if hashes else np.zeros(0, np.int32)
        self.in_test = np.concatenate(in_test)[order] if hashes else np.zeros(0, bool)
        self.prefilter = np.zeros(1 << _PREFILTER_BITS, dtype=bool)
        self.prefilter[(self.hashes >> np.uint64(64 - _PREFILTER_BITS)).astype(np.int64)] = True
        self.shapes = _ShapeIndex(list(datasets.values())) if transformed else None

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Indices into the index of every entry equal to one of `hashes` (duplicates included)."""
        candidates = hashes[self.prefilter[(hashes >> np.uint64(64 - _PREFILTER_BITS)).astype(np.int64)]]
        if not len(candidates) or not len(self.hashes):
            return np.zeros(0, dtype=np.int64)
        candidates = np.unique(candidates)
        left = np.searchsorted(self.hashes, candidates, side="left")
        right = np.searchsorted(self.hashes, candidates, side="right")
        hit = right > left
        return np.concatenate([np.arange(a, b) for a, b in zip(left[hit], right[hit], strict=True)] or
                              [np.zeros(0, dtype=np.int64)])

    def scan(self, corpus: ArrowCorpus, name: str | None = None, chunk_values: int = 1 << 22) -> int:
        """Look every run of the corpus' target values up; returns the values scanned."""
        label = name or Path(corpus.source).name
        scanned = 0
        for chunk in corpus.target.chunks:
            values = chunk.values if chunk.values is not None else chunk.values_arrow.to_numpy(zero_copy_only=False)
            bounds = chunk.inner if chunk.depth == 2 else chunk.outer  # where each series' values begin
            scanned += self._scan_values(values, bounds, label, chunk_values)
        return scanned

    def scan_series(self, series: list[np.ndarray], name: str) -> int:
        """The same for series in memory (1-D arrays)."""
        bounds = np.concatenate([[0], np.cumsum([len(s) for s in series])]).astype(np.int64)
        values = np.concatenate([np.asarray(s, np.float32) for s in series] or [np.zeros(0, np.float32)])
        return self._scan_values(values, bounds, name, 1 << 22)

    def clear_findings(self) -> None:
        """Forget what earlier scans found (the index is kept)."""
        self.results = [DatasetLeakage(r.name, r.series) for r in self.results]

    def _scan_values(self, values: np.ndarray, bounds: np.ndarray, label: str, chunk_values: int) -> int:
        scanned = 0
        # Overlapping slices: a run across a slice boundary is hashed in the next slice.
        reach = max(self.window, shapes.RUN_VALUES) - 1
        for start in range(0, max(len(values) - min(self.window, shapes.RUN_VALUES) + 1, 0), chunk_values):
            part = values[start : start + chunk_values + reach]
            self._record(self.lookup(run_hashes(part, self.window)), label)
            if self.shapes is not None:
                for d, s, stretch in self.shapes.find(part, start, values, bounds, self.results, label):
                    self._record_shape(d, s, stretch, label)
            scanned += min(len(part), chunk_values)
        return scanned

    def _record(self, entries: np.ndarray, corpus: str) -> None:
        for d, s, test in zip(self.dataset_ids[entries], self.series_ids[entries], self.in_test[entries],
                              strict=True):
            result = self.results[int(d)]
            (result.found_test if test else result.found_history).add(int(s))
            result.in_corpus.setdefault(corpus, set()).add(int(s))
            result.found_exact.add(int(s))

    def _record_shape(self, d: int, s: int, stretch: shapes.Stretch, corpus: str) -> None:
        result = self.results[d]
        if stretch.start < self.shapes.test_starts[d][s]:
            result.found_history.add(s)
        if stretch.stop > self.shapes.test_starts[d][s]:
            result.found_test.add(s)
        result.in_corpus.setdefault(corpus, set()).add(s)
        result.found_shape.add(s)
        if stretch.precision == shapes.HALF:
            result.found_half.add(s)


def _prefilter_slot(keys: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ((keys.astype(np.uint64) * _MULTIPLIER) >> np.uint64(64 - _SHAPE_PREFILTER_BITS)).astype(np.int64)


class _ShapeIndex:
    """The benchmark's shape keys (tsm.eval.affine_leakage) and the scan that verifies their candidates."""

    def __init__(self, datasets: list[list[tuple[np.ndarray, int]]], batch: int = 1 << 18):
        self.entries, self.dropped = shapes.build_entries(datasets)
        self.series = [[np.asarray(values, np.float64) for values, _ in series] for series in datasets]
        self.test_starts = [[int(start) for _, start in series] for series in datasets]
        flat, base = [], []
        position = 0
        for series in self.series:
            base.append([])
            for values in series:
                base[-1].append(position)
                flat.append(values)
                position += len(values)
        self.values = np.concatenate(flat) if flat else np.zeros(0)
        starts = np.zeros(len(self.entries.keys), np.int64)
        for d, bases in enumerate(base):  # the entries' runs as positions in self.values
            mine = self.entries.datasets == d
            starts[mine] = np.asarray(bases, np.int64)[self.entries.series[mine]] + self.entries.starts[mine]
        self.flat_starts = starts
        # Most corpus runs stop at this bit table (2^29 bits, 64 MiB: about 1% of them pass by chance).
        self.present = np.zeros(1 << (_SHAPE_PREFILTER_BITS - 3), np.uint8)
        slots = _prefilter_slot(self.entries.keys)
        np.bitwise_or.at(self.present, slots >> 3, (1 << (slots & 7)).astype(np.uint8))
        self.batch = batch

    def find(self, part: np.ndarray, part_start: int, values: np.ndarray, bounds: np.ndarray,
             results: list[DatasetLeakage], corpus: str) -> Iterator[tuple[int, int, shapes.Stretch]]:
        """Yield (dataset, series, Stretch) for every verified transformed copy in `part` (values[part_start:])."""
        keys = shapes.corpus_keys(part)
        slots = _prefilter_slot(keys)
        positions = np.flatnonzero((keys >= 0) & ((self.present[slots >> 3] >> (slots & 7).astype(np.uint8)) & 1 > 0))
        if not len(positions):
            return
        left = np.searchsorted(self.entries.keys, keys[positions], side="left")
        right = np.searchsorted(self.entries.keys, keys[positions], side="right")
        counts = right - left
        pair_run = np.repeat(positions, counts)  # candidate pairs: a corpus run and an indexed benchmark run
        pair_entry = np.repeat(left - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        offsets = np.arange(shapes.RUN_VALUES)
        groups = set()
        for begin in range(0, len(pair_run), self.batch):
            run, entry = pair_run[begin: begin + self.batch], pair_entry[begin: begin + self.batch]
            corpus_runs = part[run[:, None] + offsets].astype(np.float64)
            benchmark_runs = self.values[self.flat_starts[entry][:, None] + offsets]
            ok = shapes.verify_runs(benchmark_runs, corpus_runs)
            run, entry = run[ok] + part_start, entry[ok]
            segment = np.searchsorted(bounds, run, side="right") - 1
            segment_end = bounds[np.clip(segment + 1, 0, len(bounds) - 1)]
            # within one series (values outside every row, as in a sliced chunk, belong to none)
            inside = (segment >= 0) & (segment < len(bounds) - 1) & (run + shapes.RUN_VALUES <= segment_end)
            for r, e, g in zip(run[inside], entry[inside], segment[inside], strict=True):
                d, s = int(self.entries.datasets[e]), int(self.entries.series[e])
                offset = int(self.entries.starts[e]) - (int(r) - int(bounds[g]))
                groups.add((int(g), d, s, offset, int(r)))
        seen = set()
        for g, d, s, offset, r in sorted(groups):
            result = results[d]
            if (g, d, s, offset) in seen or (s in result.found_test and s in result.found_history
                                             and s in result.in_corpus.get(corpus, ())):
                continue  # this alignment was checked, or nothing is left to learn about the series here
            seen.add((g, d, s, offset))
            segment_values = values[bounds[g]: bounds[g + 1]]
            stretch = shapes.verify_stretch(self.series[d][s], segment_values, offset, r - int(bounds[g]))
            if stretch is not None:
                yield d, s, stretch
