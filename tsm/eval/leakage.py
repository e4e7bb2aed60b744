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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tsm.data.arrow import ArrowCorpus

logger = logging.getLogger("tsm")

WINDOW = 8  # values per hashed run: short enough for 4-6-step yearly test windows to take part
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial hash is a bijection per step
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

    @property
    def corpora(self) -> dict[str, int]:
        return {corpus: len(series) for corpus, series in self.in_corpus.items()}

    @property
    def found(self) -> int:
        return len(self.found_history | self.found_test)

    @property
    def share(self) -> float:
        return self.found / self.series if self.series else 0.0

    def summary(self) -> str:
        """What was found, without the dataset's name (tsm evaluate's regime reason)."""
        if not self.found:
            return f"none of {self.series:,} series found in the training corpora"
        where = ", ".join(f"'{c}' ({n:,})" for c, n in sorted(self.corpora.items(), key=lambda kv: -kv[1]))
        return (f"{self.found:,} of {self.series:,} series ({self.share:.1%}) found in the training corpora: "
                f"{len(self.found_test):,} with test-window values, {len(self.found_history):,} with history; "
                f"in {where}")

    def describe(self) -> str:
        return f"{self.name}: {self.summary()}"


class BenchmarkIndex:
    """The hashed runs of a benchmark's series, each tagged with its dataset, series and region."""

    def __init__(self, datasets: dict[str, list[tuple[np.ndarray, int]]], window: int = WINDOW):
        """`datasets`: name -> [(series values, test start)], the test region being values[test_start:]."""
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

    def scan(self, corpus: ArrowCorpus, name: str | None = None, chunk_values: int = 1 << 24) -> int:
        """Look every run of the corpus' target values up; returns the values scanned."""
        label = name or Path(corpus.source).name
        scanned = 0
        for chunk in corpus.target.chunks:
            values = chunk.values if chunk.values is not None else chunk.values_arrow.to_numpy(zero_copy_only=False)
            # Overlapping slices: a run across a slice boundary is hashed in the next slice.
            for start in range(0, max(len(values) - self.window + 1, 0), chunk_values):
                part = values[start : start + chunk_values + self.window - 1]
                self._record(self.lookup(run_hashes(part, self.window)), label)
                scanned += len(part)
        return scanned

    def _record(self, entries: np.ndarray, corpus: str) -> None:
        for d, s, test in zip(self.dataset_ids[entries], self.series_ids[entries], self.in_test[entries],
                              strict=True):
            result = self.results[int(d)]
            (result.found_test if test else result.found_history).add(int(s))
            result.in_corpus.setdefault(corpus, set()).add(int(s))
