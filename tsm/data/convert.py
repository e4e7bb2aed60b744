"""`tsm data convert`: long-format CSV/Parquet or GluonTS JSON lines -> the Arrow corpus the trainer reads.

Output columns (the hub's layout): `id` string, `timestamp` list<timestamp>, `target` list<float32> (or a
list of lists for several target columns), and `past_feat_dynamic_real` / `feat_dynamic_real` as lists of
lists, one inner list per covariate, as long as the target. Rows are sorted by time within each item;
items keep the order in which they first appear. Nothing is dropped silently: every dropped row, missing
value and reordered item is counted in the returned summary, and anything ambiguous is an error.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tsm.data.arrow import FUTURE_COVARIATES, PAST_COVARIATES, TARGET, DataError
from tsm.data.writer import list_array, save_table

FORMATS = ("csv", "parquet", "jsonl")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _variates_array(matrix: np.ndarray, lengths: np.ndarray, dtype: str) -> pa.Array:
    """list<list<dtype>> from a (variates, total steps) matrix whose columns are grouped by item."""
    n_variates, total = matrix.shape
    starts = np.concatenate([[0], np.cumsum(lengths)])[:-1]
    item = np.repeat(np.arange(len(lengths)), lengths)
    step = np.arange(total) - starts[item]
    flat = np.empty(n_variates * total, dtype=dtype)
    for v in range(n_variates):  # item-major layout: item i holds its V variates back to back
        flat[n_variates * starts[item] + v * lengths[item] + step] = matrix[v]
    inner = list_array(pa.array(flat), np.repeat(lengths, n_variates))
    return list_array(inner, np.full(len(lengths), n_variates))


def _timestamp_array(ticks_ns: np.ndarray) -> pa.Array:
    """Timestamps in ms (the hub's unit) when that loses nothing, else ns."""
    unit = "ms" if np.all(ticks_ns % 1_000_000 == 0) else "ns"
    return pa.array(ticks_ns.astype("datetime64[ns]").astype(f"datetime64[{unit}]"))


def _check_float32(values: np.ndarray, what: str, dtype: str) -> None:
    if dtype == "float32":
        finite = values[np.isfinite(values)]
        if finite.size and np.abs(finite).max() > FLOAT32_MAX:
            raise DataError(f"{what}: values up to {np.abs(finite).max():.3g} exceed the float32 range; "
                            "convert with --dtype float64 (or rescale the data)")


@dataclass
class Summary:
    """What a conversion read, wrote and left out (printed by the CLI, returned by `convert`)."""

    input: str
    output: str
    format: str
    rows_read: int = 0
    items: int = 0
    values: int = 0
    missing_values: int = 0  # kept as NaN
    items_reordered: int = 0  # items whose rows were not in time order (sorted)
    dropped: dict[str, int] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)

    def text(self) -> str:
        dropped = ", ".join(f"{n:,} {why}" for why, n in self.dropped.items() if n) or "nothing"
        lines = [f"wrote {self.items:,} series ({self.values:,} values) from {self.rows_read:,} {self.format} "
                 f"rows of {self.input} to {self.output}",
                 f"  dropped: {dropped}; missing values kept as NaN: {self.missing_values:,}; "
                 f"items sorted into time order: {self.items_reordered:,}"]
        if self.ignored_columns:
            lines.append(f"  columns not converted: {', '.join(self.ignored_columns)}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------- long format
@dataclass
class LongColumns:
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    targets: Sequence[str] = ("target",)
    past_covariates: Sequence[str] = ()
    known_covariates: Sequence[str] = ()


def read_long(path: Path, fmt: str) -> pd.DataFrame:
    try:
        if fmt == "csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])  # parse values ourselves
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a header line and rows of item_id,timestamp,target") from None
    except (pa.ArrowInvalid, OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path} could not be read as {fmt} ({exc}); it may be corrupted or another format "
                        "(choose with --format)") from None


def _row_name(source: str, fmt: str, index: int) -> str:
    return f"{source}: line {index + 2}" if fmt == "csv" else f"{source}: row {index}"


def _numbers(frame: pd.DataFrame, column: str, source: str, fmt: str) -> np.ndarray:
    """A column as float64; text that is not a number is an error naming its row."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(np.isnan(values) & raw.notna().to_numpy())
    bad = bad[~raw.iloc[bad].astype(str).str.strip().str.lower().isin(["nan", "na", "null", "none"]).to_numpy()]
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{_row_name(source, fmt, i)}, column '{column}': value {raw.iloc[i]!r} is not a number "
                        f"({len(bad):,} such values in this column)")
    return values


def _timestamps(frame: pd.DataFrame, column: str, source: str, fmt: str) -> np.ndarray:
    raw = frame[column]
    try:
        parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
    except (ValueError, TypeError) as exc:  # e.g. mixed time zones
        raise DataError(f"{source}: column '{column}': timestamps could not be parsed ({exc})") from None
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)  # one clock for every item
    bad = np.flatnonzero(parsed.isna().to_numpy() & raw.notna().to_numpy())
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{_row_name(source, fmt, i)}, column '{column}': {raw.iloc[i]!r} is not a timestamp "
                        f"({len(bad):,} such values)")
    return parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def long_to_table(frame: pd.DataFrame, columns: LongColumns, source: str, fmt: str, summary: Summary,
                  dtype: str = "float32") -> pa.Table:
    """Group a long table (one row per item and time step) into one row per item, sorted by time."""
    needed = [columns.item_id, columns.timestamp, *columns.targets, *columns.past_covariates,
              *columns.known_covariates]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: no column(s) {missing} (columns: {list(frame.columns)}); name them with "
                        "--id-column / --timestamp-column / --target-column / --past-covariates / --known-covariates")
    summary.rows_read = len(frame)
    summary.ignored_columns = [str(c) for c in frame.columns if c not in needed]
    if len(frame) == 0:
        raise DataError(f"{source}: no data rows (only a header)")

    keep = frame[columns.item_id].notna().to_numpy() & frame[columns.timestamp].notna().to_numpy()
    summary.dropped = {"rows without an item id": int(frame[columns.item_id].isna().sum()),
                       "rows without a timestamp": int((frame[columns.item_id].notna()
                                                        & frame[columns.timestamp].isna()).sum())}
    frame = frame[keep].reset_index(drop=True) if not keep.all() else frame
    if len(frame) == 0:
        raise DataError(f"{source}: every row lacks an item id or a timestamp")
    index = np.flatnonzero(keep)  # original row numbers, for messages after dropping

    ticks = _timestamps(frame, columns.timestamp, source, fmt)
    codes, items = pd.factorize(frame[columns.item_id].astype(str), sort=False)  # order of first appearance
    order = np.lexsort((ticks, codes))
    codes_sorted, ticks_sorted = codes[order], ticks[order]
    same_item = codes_sorted[1:] == codes_sorted[:-1]
    duplicate = np.flatnonzero(same_item & (ticks_sorted[1:] == ticks_sorted[:-1]))
    if len(duplicate):
        j = order[duplicate[0] + 1]
        raise DataError(f"{_row_name(source, fmt, int(index[j]))}: item {items[codes[j]]!r} has timestamp "
                        f"{pd.Timestamp(ticks[j])} more than once ({len(duplicate):,} duplicate timestamps in "
                        "all); keep one row per item and time step")
    by_item = np.argsort(codes, kind="stable")  # file order within each item
    step_back = (codes[by_item][1:] == codes[by_item][:-1]) & (ticks[by_item][1:] < ticks[by_item][:-1])
    summary.items_reordered = len(np.unique(codes[by_item][1:][step_back]))

    lengths = np.bincount(codes, minlength=len(items))
    targets = np.stack([_numbers(frame, c, source, fmt)[order] for c in columns.targets])
    _check_float32(targets, f"{source}: target", dtype)
    summary.items, summary.values = len(items), int(targets.size)
    summary.missing_values = int(np.isnan(targets).sum())
    table = {
        "id": pa.array(np.asarray(items, dtype=str), pa.string()),
        "timestamp": list_array(_timestamp_array(ticks_sorted), lengths),
        TARGET: (list_array(pa.array(targets[0].astype(dtype)), lengths) if len(columns.targets) == 1
                 else _variates_array(targets, lengths, dtype)),
    }
    for name, covariates in ((PAST_COVARIATES, columns.past_covariates), (FUTURE_COVARIATES, columns.known_covariates)):
        if covariates:
            matrix = np.stack([_numbers(frame, c, source, fmt)[order] for c in covariates])
            _check_float32(matrix, f"{source}: {name}", dtype)
            table[name] = _variates_array(matrix, lengths, dtype)
    return pa.table(table)


# ------------------------------------------------------------------------------------------- JSON lines
def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)  # noqa: SIM115


def _json_array(value, where: str, field_name: str, ndim: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)  # None -> NaN, "NaN" -> NaN, "1.5" -> 1.5
    except (ValueError, TypeError):
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            lengths = [len(v) for v in value]
            if len(set(lengths)) > 1:
                raise DataError(f"{where}, field '{field_name}': ragged: its rows have lengths {lengths}; every "
                                "variate must have the same length") from None
        bad = next((v for v in np.ravel(np.array(value, dtype=object)) if not _is_number(v)), value)
        raise DataError(f"{where}, field '{field_name}': {bad!r} is not a number") from None
    if array.ndim == 1 and ndim == 2:
        array = array[None, :]
    if array.ndim not in (1, 2) or (ndim is not None and array.ndim != ndim):
        raise DataError(f"{where}, field '{field_name}': expected a list of numbers or a list of equal-length "
                        f"lists, got an array of shape {array.shape}")
    return array


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return value is None


def _period_start_ticks(start: str, length: int, freq: str, where: str) -> np.ndarray:
    """GluonTS semantics: `start` is a period of `freq`; each step is one period; stored as period starts."""
    try:
        periods = pd.period_range(start=pd.Period(start, freq=freq), periods=length, freq=freq)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{where}: start {start!r} with --freq {freq!r} is not a valid period ({exc})") from None
    return periods.to_timestamp(how="start").to_numpy(dtype="datetime64[ns]").astype(np.int64)


def jsonl_to_table(path: Path, freq: str | None, summary: Summary, dtype: str = "float32") -> pa.Table:
    """Read GluonTS-style JSON lines: `start`, `target`, optional `item_id`, `feat_dynamic_real`,
    `past_feat_dynamic_real`. Covariates must be exactly as long as the target."""
    if not freq:
        raise DataError(f"{path}: GluonTS JSON lines give only each series' start; pass --freq (e.g. h, D, W, M)")
    ids, targets, ticks = [], [], []
    covariates: dict[str, list[np.ndarray]] = {PAST_COVARIATES: [], FUTURE_COVARIATES: []}
    blank = 0
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                blank += 1
                continue
            where = f"{path}: line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or TARGET not in record or "start" not in record:
                keys = list(record) if isinstance(record, dict) else type(record).__name__
                raise DataError(f"{where}: needs fields 'start' and '{TARGET}' (has {keys})")
            target = _json_array(record[TARGET], where, TARGET)
            length = target.shape[-1]
            for name, store in covariates.items():
                if name in record:
                    values = _json_array(record[name], where, name, ndim=2)
                    if values.shape[1] != length:
                        raise DataError(f"{where}, field '{name}': length {values.shape[1]} differs from the "
                                        f"target's length {length}; covariates must cover the target's time steps")
                    store.append(values)
            ids.append(str(record.get("item_id", number - blank - 1)))
            targets.append(target)
            ticks.append(_period_start_ticks(str(record["start"]), length, freq, where))
    summary.rows_read = len(targets)
    summary.dropped = {"blank lines": blank}
    if not targets:
        raise DataError(f"{path} is empty: expected one JSON object per line with 'start' and '{TARGET}'")
    return _records_table(path, ids, targets, ticks, covariates, summary, dtype)


def _records_table(path: Path, ids: list[str], targets: list[np.ndarray], ticks: list[np.ndarray],
                   covariates: dict[str, list[np.ndarray]], summary: Summary, dtype: str) -> pa.Table:
    seen: dict[str, int] = {}
    for i, item in enumerate(ids):
        if item in seen:
            raise DataError(f"{path}: item_id {item!r} appears on record {seen[item] + 1} and record {i + 1}; "
                            "item ids must be unique")
        seen[item] = i
    if len({t.ndim for t in targets}) > 1:
        raise DataError(f"{path}: some targets are lists of numbers and some lists of lists; use one form")
    for name, store in covariates.items():
        if store and len(store) != len(targets):
            raise DataError(f"{path}: field '{name}' is on {len(store)} of {len(targets)} records; give it on all "
                            "or none")
        if store and len({s.shape[0] for s in store}) > 1:
            raise DataError(f"{path}: field '{name}' has different numbers of covariates per record")
    lengths = np.array([t.shape[-1] for t in targets], dtype=np.int64)
    summary.items = len(targets)
    summary.values = int(sum(t.size for t in targets))
    summary.missing_values = int(sum(np.isnan(t).sum() for t in targets))
    table = {"id": pa.array(ids, pa.string()),
             "timestamp": list_array(_timestamp_array(np.concatenate(ticks)), lengths)}
    if targets[0].ndim == 1:
        flat = np.concatenate(targets)
        _check_float32(flat, f"{path}: target", dtype)
        table[TARGET] = list_array(pa.array(flat.astype(dtype)), lengths)
    else:
        table[TARGET] = _nested(targets, f"{path}: target", dtype)
    for name, store in covariates.items():
        if store:
            table[name] = _nested(store, f"{path}: {name}", dtype)
    return pa.table(table)


def _nested(blocks: list[np.ndarray], what: str, dtype: str) -> pa.Array:
    """list<list<dtype>> from (variates, length) blocks."""
    flat = np.concatenate([b.ravel() for b in blocks])
    _check_float32(flat, what, dtype)
    inner = list_array(pa.array(flat.astype(dtype)), np.concatenate([[b.shape[1]] * b.shape[0] for b in blocks]))
    return list_array(inner, np.array([b.shape[0] for b in blocks], dtype=np.int64))


# ------------------------------------------------------------------------------------------- entry point
def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    formats = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}
    if ext not in formats:
        raise DataError(f"{path}: cannot tell the format from the name; pass --format ({', '.join(FORMATS)})")
    return formats[ext]


def convert(input_path: str | Path, output: str | Path, fmt: str | None = None,
            columns: LongColumns | None = None, freq: str | None = None, dtype: str = "float32") -> Summary:
    """Convert one file into a corpus folder at `output` (replaced atomically); returns what was done."""
    path = Path(input_path)
    if not path.exists():
        raise DataError(f"input file {path} does not exist")
    if path.is_dir():
        return _convert_folder(path, output, fmt, columns, dtype)
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty (0 bytes)")
    summary = Summary(input=str(path), output=str(output), format=fmt)
    if fmt == "jsonl":
        table = jsonl_to_table(path, freq, summary, dtype)
    else:
        table = long_to_table(read_long(path, fmt), columns or LongColumns(), str(path), fmt, summary, dtype)
    save_table(table, output)
    return summary


def _convert_folder(folder: Path, output: str | Path, fmt: str | None, columns: LongColumns | None,
                    dtype: str) -> Summary:
    """A folder of long-format CSV or Parquet files (one format, the same columns): read as one long table, so
    an item's rows may be spread over several files (e.g. one file per month)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    formats = {}
    for file in files:
        try:
            formats[file] = fmt or detect_format(file)
        except DataError:
            continue  # not a data file by its name (a README, say): listed below if nothing else is there
    kinds = set(formats.values())
    if not kinds:
        raise DataError(f"input folder {folder} holds no .csv, .parquet or .jsonl file "
                        f"({len(files)} other file(s)); convert takes a file or a folder of them")
    if len(kinds) > 1 or "jsonl" in kinds:
        raise DataError(f"input folder {folder} holds {', '.join(sorted(kinds))} files: a folder must hold "
                        "long-format CSV or Parquet files of one format; convert JSON lines files one by one")
    kind = kinds.pop()
    empty = [str(p) for p in formats if p.stat().st_size == 0]
    if empty:
        raise DataError(f"{', '.join(empty)}: empty (0 bytes)")
    summary = Summary(input=str(folder), output=str(output), format=kind)
    frame = pd.concat([read_long(p, kind) for p in formats], ignore_index=True)
    table = long_to_table(frame, columns or LongColumns(), f"{folder} ({len(formats)} {kind} files)", kind, summary,
                          dtype)
    save_table(table, output)
    return summary
