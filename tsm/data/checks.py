"""`tsm data check`: the data checks, run on corpora before training, fast, without loading them into memory.

Each corpus is read batch by batch from its memory-mapped Arrow files; every statistic is computed with
vectorised pyarrow/numpy operations over a whole batch (list offsets + flat values), never a Python loop
per row. Fatal problems (the trainer would crash or learn nothing) name the dataset, the row and the
column; everything else is counted and reported.

What `check` writes (`report.json`, tsm.layout.DATA_CHECK_REPORT) is one typed record,
tsm.records.DataCheckReport: the checks fill it and the HTML report reads it back with `DataCheckReport.read`,
so neither guesses the other's format. ("Validation" is the held-out scoring during training, tsm.train.validation.)
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from tsm.atomic import write_text
from tsm.data.arrow import FUTURE_COVARIATES, PAST_COVARIATES, TARGET, DataError, _list_depth, open_dataset_table
from tsm.records import DataCheckReport, DatasetCheck, LengthStats, Range, SeriesCounts, ValueStats

TIMESTAMP = "timestamp"
BATCH_ROWS = 8192  # rows per vectorised step: large enough to amortise, small enough to keep the heap flat
MAX_EXAMPLES = 5  # rows named per kind of problem; the rest are counted
FLOAT32_MAX = float(np.finfo(np.float32).max)
SERIES_COUNTS = ("usable", "empty", "null", "all_nan", "constant", "too_short", "with_nan", "with_inf",
                 "timestamp_length_mismatch", "unsorted_timestamps")


# --------------------------------------------------------------------------------------------- problems
@dataclass
class _Problems:
    """Rows with problems, by kind: a count per kind and the first few messages naming a row."""

    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, rows: np.ndarray, describe: Callable[[int], str]) -> None:
        if len(rows) == 0:
            return
        self.counts[kind] += len(rows)
        room = MAX_EXAMPLES - len(self.examples[kind])
        self.examples[kind].extend(describe(int(r)) for r in rows[: max(room, 0)])

    def add_message(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.examples[kind].append(message)

    def messages(self) -> list[str]:
        lines = []
        for kind, examples in self.examples.items():
            lines.extend(examples)
            if self.counts[kind] > len(examples):
                lines.append(f"... {self.counts[kind]:,} rows in all with this problem ({kind})")
        return lines


# ------------------------------------------------------------------------------------ vectorised pieces
def _flatten(array: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Offsets rebased to 0 and the child values they index (respects slicing; no copy)."""
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return offsets - offsets[0], values


def _segment_sum(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of x over each [offsets[i], offsets[i+1]) segment; empty segments give 0."""
    cumulative = np.concatenate([[0], np.cumsum(x, dtype=np.int64)])
    return cumulative[offsets[1:]] - cumulative[offsets[:-1]]


def _segment_count(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Number of True values in each segment; cheap when they are rare (NaN, inf), which is the usual case."""
    return np.diff(np.searchsorted(np.flatnonzero(mask), offsets))


def _segment_reduce(ufunc: np.ufunc, x: np.ndarray, offsets: np.ndarray, empty: float) -> np.ndarray:
    """ufunc.reduceat over segments, with `empty` for empty segments (reduceat alone mishandles them)."""
    out = np.full(len(offsets) - 1, empty, dtype=np.float64)
    nonempty = offsets[1:] > offsets[:-1]
    if len(x) and nonempty.any():
        out[nonempty] = ufunc.reduceat(x, offsets[:-1][nonempty])
    return out


@dataclass
class _SegmentStats:
    """Per segment (one series, or one variate of a multivariate series) of a numeric list column."""

    length: np.ndarray
    nan: np.ndarray
    inf: np.ndarray
    constant: np.ndarray  # at least one number, and all numbers equal
    overflow: int  # finite float64 values beyond the float32 range (the reader turns them into inf)


def _segment_stats(values: pa.Array, offsets: np.ndarray) -> _SegmentStats:
    x = values.to_numpy(zero_copy_only=False)  # a view for floats without nulls; nulls become NaN
    length = np.diff(offsets)
    if not np.issubdtype(x.dtype, np.floating):
        zeros = np.zeros(len(length), dtype=np.int64)
        lo, hi = _segment_reduce(np.minimum, x, offsets, 0), _segment_reduce(np.maximum, x, offsets, 0)
        return _SegmentStats(length, zeros, zeros, (length > 0) & (lo == hi), 0)
    nan = _segment_count(np.isnan(x), offsets)
    inf = _segment_count(np.isinf(x), offsets)
    # fmin/fmax skip NaN, so a series with some NaN is still recognised as constant.
    lo, hi = _segment_reduce(np.fmin, x, offsets, np.nan), _segment_reduce(np.fmax, x, offsets, np.nan)
    overflow = int(np.count_nonzero(np.abs(x[np.isfinite(x)]) > FLOAT32_MAX)) if x.dtype == np.float64 else 0
    return _SegmentStats(length, nan, inf, (length > nan) & (lo == hi), overflow)


@dataclass
class _RowStats:
    """Per row of a (batch of a) list column, whatever its depth."""

    length: np.ndarray  # time steps (of the first variate)
    variates: np.ndarray
    values: np.ndarray  # numbers in the row, all variates together
    nan: np.ndarray
    inf: np.ndarray
    constant: np.ndarray
    overflow: int
    ragged: np.ndarray  # rows whose variates have different lengths
    variate_lengths: np.ndarray  # per variate, flattened over rows
    variate_rows: np.ndarray  # the row of each variate


def _row_stats(array: pa.Array, depth: int) -> _RowStats:
    valid = np.ones(len(array), bool) if array.null_count == 0 else array.is_valid().to_numpy(zero_copy_only=False)
    offsets, child = _flatten(array)
    if depth == 1:
        seg = _segment_stats(child, offsets)
        variates = valid.astype(np.int64)
        length = np.where(valid, seg.length, 0)
        rows = np.arange(len(array))[valid]
        return _RowStats(length, variates, length, np.where(valid, seg.nan, 0), np.where(valid, seg.inf, 0),
                         valid & seg.constant, seg.overflow, np.zeros(len(array), bool), length[valid], rows)
    inner_offsets, values = _flatten(child)
    seg = _segment_stats(values, inner_offsets)
    variates = np.where(valid, np.diff(offsets), 0)
    first = np.minimum(offsets[:-1], max(len(seg.length) - 1, 0))
    length = np.where(variates > 0, seg.length[first] if len(seg.length) else 0, 0)
    shortest = _segment_reduce(np.minimum, seg.length, offsets, 0)
    longest = _segment_reduce(np.maximum, seg.length, offsets, 0)
    constant = (_segment_sum(seg.constant, offsets) == variates) & (variates > 0)
    variate_rows = np.repeat(np.arange(len(array)), np.diff(offsets))
    keep = valid[variate_rows]
    return _RowStats(length, variates, np.where(valid, _segment_sum(seg.length, offsets), 0),
                     np.where(valid, _segment_sum(seg.nan, offsets), 0),
                     np.where(valid, _segment_sum(seg.inf, offsets), 0), constant, seg.overflow,
                     valid & (shortest != longest), seg.length[keep], variate_rows[keep])


def _timestamp_checks(array: pa.Array, target_length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose timestamps differ in length from the target, and rows not strictly increasing in time."""
    offsets, values = _flatten(array)
    length = np.diff(offsets)
    ticks = pc.cast(values, pa.int64()).to_numpy(zero_copy_only=False)
    step_back = np.diff(ticks) <= 0 if len(ticks) > 1 else np.zeros(0, bool)
    # A step between two rows (at a row boundary) is not a step back in time: mask those out.
    inside = np.ones(len(step_back), bool)
    inside[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] <= len(step_back))] - 1] = False
    unsorted = _segment_sum(np.concatenate([step_back & inside, [False]]), offsets) > 0
    return np.flatnonzero(length != target_length), np.flatnonzero(unsorted)


# ----------------------------------------------------------------------------------------- schema
def _type_problem(column: pa.ChunkedArray, name: str, source: str) -> str | None:
    """None if the column is a list (or list of lists) of numbers, else a message naming a bad row."""
    if _list_depth(column.type) is not None:
        return None
    kind = column.type
    while pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return (f"{source}: column '{name}' has type {column.type}; expected a list of numbers (one series) or "
                "a list of equal-length lists of numbers (variates). Convert it with `tsm data convert`.")
    row, value = _first_non_number(column)
    where = f"row {row}, column '{name}'"
    if value is None:
        return (f"{source}: {where}: the values are strings ({column.type}), not numbers; store them as numbers "
                "(e.g. `tsm data convert`, which parses numeric text).")
    return f"{source}: {where}: value {value!r} is not a number (column type {column.type})."


def _first_non_number(column: pa.ChunkedArray, max_rows: int = 100_000) -> tuple[int, str | None]:
    """The first row (of the first `max_rows`) holding text that is not a number; (0, None) if none is found."""
    start = 0
    for chunk in column.slice(0, max_rows).chunks:  # only on the error path: a Python loop is fine here
        for i, row in enumerate(chunk.to_pylist()):
            for value in np.ravel(np.array(row or [], dtype=object)):
                try:
                    float(value)
                except (TypeError, ValueError):
                    if value is not None:
                        return start + i, value
        start += len(chunk)
    return 0, None


def _schema_errors(table: pa.Table, source: str) -> list[str]:
    if TARGET not in table.column_names:
        return [f"{source}: no '{TARGET}' column (columns: {table.column_names}); each row needs a '{TARGET}' "
                "with the series values (`tsm data convert --target-column NAME` renames it)."]
    errors = []
    for name in (TARGET, PAST_COVARIATES, FUTURE_COVARIATES):
        if name in table.column_names:
            problem = _type_problem(table.column(name), name, source)
            if problem:
                errors.append(problem)
    return errors


# ----------------------------------------------------------------------------------------- one corpus
@dataclass
class _Totals:
    """Running totals over the batches of one list column."""

    lengths: list[np.ndarray] = field(default_factory=list)
    variates: list[np.ndarray] = field(default_factory=list)
    values: int = 0
    nan: int = 0
    inf: int = 0
    overflow: int = 0

    def add(self, stats: _RowStats) -> None:
        self.lengths.append(stats.length)
        self.variates.append(stats.variates)
        self.values += int(stats.values.sum())
        self.nan += int(stats.nan.sum())
        self.inf += int(stats.inf.sum())
        self.overflow += stats.overflow

    def summary(self, dtype: pa.DataType) -> ValueStats:
        variates = np.concatenate(self.variates) if self.variates else np.zeros(0, np.int64)
        return ValueStats(
            dtype=str(dtype), variates=Range(int(variates.min()) if len(variates) else 0, int(variates.max(initial=0))),
            values=self.values, nan=self.nan, nan_fraction=self.nan / max(self.values, 1),
            inf=self.inf, inf_fraction=self.inf / max(self.values, 1), float32_overflow=self.overflow)


def _length_summary(lengths: np.ndarray) -> LengthStats | None:
    if len(lengths) == 0:
        return None
    p5, median, p95 = np.percentile(lengths, [5, 50, 95])
    return LengthStats(min=int(lengths.min()), p5=round(float(p5), 1), median=round(float(median), 1),
                       p95=round(float(p95), 1), max=int(lengths.max()), mean=float(lengths.mean()))


class _CorpusCheck:
    """The running state of one corpus' checks; `batch` adds rows [start, start + len(batch))."""

    def __init__(self, source: str, covariates: list[str], min_length: int | None):
        self.source, self.covariates, self.min_length = source, covariates, min_length
        self.fatal, self.warn = _Problems(), _Problems()
        self.target = _Totals()
        self.covariate_totals = {name: _Totals() for name in covariates}
        self.series: dict[str, int] = defaultdict(int)

    def _where(self, row: int, column: str) -> str:
        return f"{self.source}: row {row}, column '{column}'"

    def batch(self, batch: pa.RecordBatch, start: int) -> None:
        for column, name in zip(batch.columns, batch.schema.names, strict=True):
            try:
                column.validate(full=True)  # offsets pointing outside the values: a damaged file
            except pa.ArrowInvalid as exc:
                self.fatal.add_message("corrupted", f"{self.source}: rows {start}-{start + len(batch) - 1}, column "
                                                    f"'{name}': inconsistent Arrow data ({exc}); the file may be "
                                                    "corrupted.")
                return
        stats = self._target(batch.column(TARGET), start)
        for name in self.covariates:
            self._covariate(batch.column(name), name, stats.length, start)
        if TIMESTAMP in batch.schema.names and _is_timestamp_list(batch.schema.field(TIMESTAMP).type):
            self._timestamps(batch.column(TIMESTAMP), stats.length, start)

    def _target(self, target: pa.Array, start: int) -> _RowStats:
        stats = _row_stats(target, _list_depth(target.type))
        self.target.add(stats)
        self.fatal.add(f"ragged {TARGET}", np.flatnonzero(stats.ragged), lambda r: (
            f"{self._where(start + r, TARGET)}: variates have different lengths; all variates of a series must "
            "have the same length (pad with NaN)."))
        all_nan = (stats.variates > 0) & (stats.values > 0) & (stats.nan == stats.values)
        empty = stats.length == 0
        short = stats.length < (self.min_length or 1)
        counts = {
            "null": target.null_count, "empty": empty, "all_nan": all_nan, "constant": stats.constant,
            "with_nan": stats.nan > 0, "with_inf": stats.inf > 0,
            "too_short": (short & ~empty) if self.min_length else 0, "usable": ~short & ~all_nan & ~stats.ragged,
        }
        for key, value in counts.items():
            self.series[key] += int(np.count_nonzero(value)) if isinstance(value, np.ndarray) else value
        self.warn.add("all-NaN series", np.flatnonzero(all_nan), lambda r: (
            f"{self._where(start + r, TARGET)}: every value is NaN (the series is skipped)"))
        self.warn.add("inf values", np.flatnonzero(stats.inf > 0), lambda r: (
            f"{self._where(start + r, TARGET)}: holds inf values"))
        return stats

    def _covariate(self, column: pa.Array, name: str, target_length: np.ndarray, start: int) -> None:
        cov = _row_stats(column, _list_depth(column.type))
        self.covariate_totals[name].add(cov)
        wrong = np.unique(cov.variate_rows[cov.variate_lengths != target_length[cov.variate_rows]])
        self.fatal.add(f"{name} length", wrong, lambda r: (
            f"{self._where(start + r, name)}: covariate lengths "
            f"{sorted(set(cov.variate_lengths[cov.variate_rows == r].tolist()))} differ from the target's length "
            f"{int(target_length[r])}; covariates must cover the same time steps as the target."))

    def _timestamps(self, column: pa.Array, target_length: np.ndarray, start: int) -> None:
        mismatch, unsorted = _timestamp_checks(column, target_length)
        self.series["timestamp_length_mismatch"] += len(mismatch)
        self.series["unsorted_timestamps"] += len(unsorted)
        self.warn.add("timestamp length", mismatch, lambda r: (
            f"{self._where(start + r, TIMESTAMP)}: length differs from the target's"))
        self.warn.add("unsorted timestamps", unsorted, lambda r: (
            f"{self._where(start + r, TIMESTAMP)}: timestamps are not strictly increasing"))


def _is_timestamp_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_timestamp(kind.value_type)


def check_corpus(path: str | Path, min_length: int | None, progress: bool = True) -> DatasetCheck:
    """Check one corpus; `ok` is False and `errors` lists why when it is unusable.

    `min_length` is min_past + prediction_length of the training config: shorter series are counted as
    too short (the trainer skips them). None checks only that series are non-empty.
    """
    began = time.perf_counter()
    report = DatasetCheck(dataset=str(path), ok=False, min_length=min_length)
    try:
        table, source = open_dataset_table(path)
    except DataError as exc:
        report.errors.append(str(exc))
        return report
    report.schema = {name: str(table.schema.field(name).type) for name in table.column_names}
    report.num_series = table.num_rows
    report.errors = _schema_errors(table, source)
    if report.errors:
        return report

    covariates = [name for name in (PAST_COVARIATES, FUTURE_COVARIATES) if name in table.column_names]
    check = _CorpusCheck(source, covariates, min_length)
    columns = [TARGET, *covariates] + ([TIMESTAMP] if TIMESTAMP in table.column_names else [])
    start = 0
    with tqdm(total=table.num_rows, unit=" series", unit_scale=True, desc=f"check {Path(path).name}",
              disable=not progress, mininterval=0.5) as bar:
        for batch in table.select(columns).to_batches(max_chunksize=BATCH_ROWS):
            check.batch(batch, start)
            start += len(batch)
            bar.update(len(batch))

    lengths = np.concatenate(check.target.lengths) if check.target.lengths else np.zeros(0, np.int64)
    series = check.series
    report.length = _length_summary(lengths)
    report.target = check.target.summary(table.schema.field(TARGET).type)
    report.series = SeriesCounts(total=table.num_rows, **{k: series[k] for k in SERIES_COUNTS})
    report.covariates = {name: totals.summary(table.schema.field(name).type)
                         for name, totals in check.covariate_totals.items()}
    report.errors = check.fatal.messages()
    if series["usable"] == 0 and not check.fatal.counts.get("corrupted"):
        report.errors.append(
            f"{source}: no usable series: {table.num_rows:,} rows, of which {series['empty']:,} empty, "
            f"{series['too_short']:,} shorter than {min_length} (min_past + prediction_length), "
            f"{series['all_nan']:,} all NaN.")
    if check.target.overflow:
        report.warnings.append(f"{source}: column '{TARGET}': {check.target.overflow:,} float64 values exceed "
                               "the float32 range and will read as inf")
    report.warnings += check.warn.messages()
    report.ok = not report.errors
    seconds = time.perf_counter() - began
    report.seconds = round(seconds, 3)
    report.series_per_second = round(table.num_rows / max(seconds, 1e-9))
    return report


# ----------------------------------------------------------------------------------------- several
def summarise(report: DatasetCheck) -> str:
    """A few lines for people; the JSON report has everything."""
    head = f"{'OK  ' if report.ok else 'FAIL'} {report.dataset}"
    s, length, target = report.series, report.length, report.target
    if s is None or target is None:
        return "\n".join([head, *(f"  error: {e}" for e in report.errors)])
    shown = (f"min {length.min} p5 {length.p5} median {length.median} p95 {length.p95} max {length.max}"
             if length is not None else "min None p5 None median None p95 None max None")
    lines = [
        f"{head}: {s.total:,} series ({s.usable:,} usable), {target.dtype}, "
        f"variates {target.variates.min}-{target.variates.max}",
        f"  length {shown}",
        f"  NaN {target.nan_fraction:.2%} inf {target.inf_fraction:.2%}; series: {s.empty:,} empty, "
        f"{s.all_nan:,} all-NaN, {s.constant:,} constant"
        + (f", {s.too_short:,} too short (< {report.min_length})" if report.min_length else "")
        + (f", {s.unsorted_timestamps:,} with unsorted timestamps" if s.unsorted_timestamps else ""),
    ]
    for name, cov in report.covariates.items():
        lines.append(f"  {name}: {cov.variates.min}-{cov.variates.max} variates, NaN {cov.nan_fraction:.2%}")
    lines += [f"  error: {e}" for e in report.errors]
    lines += [f"  warning: {w}" for w in report.warnings[:10]]
    if len(report.warnings) > 10:
        lines.append(f"  ... {len(report.warnings) - 10} more warnings in the JSON report")
    lines.append(f"  checked in {report.seconds:.2f} s ({report.series_per_second:,} series/s)")
    return "\n".join(lines)


def check(paths: Sequence[str | Path], min_length: int | None, output: str | Path | None,
          progress: bool = True, summary: str | Path | None = None) -> DataCheckReport:
    """Check every corpus, write the JSON report to `output` (and the printed summary to `summary`), print
    the summary; the report's `ok` is True when every corpus is usable."""
    report = DataCheckReport(ok=False, min_length=min_length,
                             datasets=[check_corpus(path, min_length, progress=progress) for path in paths])
    report.ok = all(d.ok for d in report.datasets)
    if output is not None:
        report.write(output)
    text = "\n".join(summarise(d) for d in report.datasets)
    if summary is not None:
        write_text(summary, text + "\n")
    print(text)
    return report
