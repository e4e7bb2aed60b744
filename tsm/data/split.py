"""`tsm data split`: the honest split of a user's corpus, made once, before anything trains.

The last `horizon x num_windows` steps of every series are the test region. They are cut off the training
folder (targets, covariates and timestamps alike), so neither training nor the trainer's validation (which
holds out the last `prediction_length` steps of each *training* series: the window just before the test
region) can read them. The whole series go into a benchmark over the user's data: a fev task file whose
windows are exactly the test region (`num_windows` windows of `horizon` steps, back to back, ending at each
series' end), with the covariates and multivariate targets as fev and Chronos-2 take them.

Series too short to give a training window (min_past + horizon steps) before the test region are left out of
both sides, counted and named in `split.json`: never dropped silently.

Output folder:
  train/            the training corpus (the input's columns, each series without its test region)
  benchmark/NAME/   the full series in fev's column layout (one list column per target and covariate)
  tasks.yaml        the fev task file over benchmark/ (tsm evaluate --benchmark tasks.yaml --datasets-root
                    benchmark)
  split.json        the counts, the settings and the series left out
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from tsm.atomic import write_text
from tsm.data.arrow import FUTURE_COVARIATES, PAST_COVARIATES, TARGET, DataError, open_dataset_table
from tsm.data.writer import list_array, save_table

QUANTILE_LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
SPLIT_SUMMARY = "split.json"
TASKS_FILE = "tasks.yaml"
NAMES_SHOWN = 20  # series named in the printed summary (split.json names them all)


@dataclass
class SplitSummary:
    """What the split kept and left out (split.json; printed by the CLI)."""

    input: str
    dataset: str
    horizon: int
    num_windows: int
    min_past: int
    seasonality: int
    series: int = 0
    kept: int = 0
    test_steps_per_series: int = 0
    train_values: int = 0
    too_short: list[str] = field(default_factory=list)
    target_columns: list[str] = field(default_factory=list)
    past_covariates: list[str] = field(default_factory=list)
    known_covariates: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"split {self.series:,} series of {self.input}: {self.kept:,} kept, the last "
                 f"{self.test_steps_per_series:,} steps of each ({self.num_windows} window(s) of {self.horizon}) "
                 f"held out as the test region; {self.train_values:,} training values left"]
        if self.too_short:
            shown = ", ".join(self.too_short[:NAMES_SHOWN]) + (", ..." if len(self.too_short) > NAMES_SHOWN else "")
            lines.append(f"  left out, shorter than {self.test_steps_per_series + self.min_past + self.horizon} "
                         f"steps (test region + min_past + one validation window): {len(self.too_short):,} "
                         f"series ({shown})")
        return "\n".join(lines)


def _lengths(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per row, the number of time steps: the list length, or for a list of lists its first inner list's."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(array.type.value_type) or pa.types.is_large_list(array.type.value_type):
        inner = pc.list_value_length(array.flatten()).to_numpy(zero_copy_only=False).astype(np.int64)
        return inner[_first_inner(array)] if len(inner) else np.zeros(len(array), dtype=np.int64)
    return pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)


def truncate_lists(array: pa.Array, keep: np.ndarray) -> pa.Array:
    """Each row's list cut to its first keep[row] values; for a list of lists, each inner list is (the
    variates or covariates of a series all cover the same steps)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    inner_type = array.type.value_type
    if pa.types.is_list(inner_type) or pa.types.is_large_list(inner_type):
        counts = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
        inner = truncate_lists(array.flatten(), np.repeat(keep, counts))
        return list_array(inner, counts)
    counts = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.cumsum(counts) - counts  # positions in array.flatten(), right for a slice too
    # indices of the kept values: starts[row] + 0..keep[row]-1, for every row at once
    row_of = np.repeat(np.arange(len(keep)), keep)
    within = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
    values = array.flatten().take(pa.array(starts[row_of] + within))
    return list_array(values, keep)


def _first_inner(array: pa.Array) -> np.ndarray:
    """Per row of a list-of-lists array, the position of its first inner list in `array.flatten()` (which,
    unlike `array.offsets`, starts at the array's own first value when the array is a slice)."""
    counts = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.cumsum(counts) - counts


def _variate(column: pa.ChunkedArray, index: int) -> pa.Array:
    """The `index`-th inner list of every row of a list-of-lists column, as a list column."""
    array = column.combine_chunks()
    return array.flatten().take(pa.array(_first_inner(array) + index))


def read_corpus(folder: str | Path) -> pa.Table:
    """A converted corpus (`tsm data convert`) or any saved `datasets` folder with a `target` column, read as the
    trainer reads it (memory-mapped, the same errors)."""
    table, source = open_dataset_table(folder)
    if TARGET not in table.column_names:
        raise DataError(f"{source}: no '{TARGET}' column (columns: {', '.join(table.column_names)})")
    return table


def _named(names: Sequence[str], count: int, prefix: str, folder: str | Path, what: str) -> list[str]:
    if not names:
        return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]
    if len(names) != count:
        raise DataError(f"{folder}: {len(names)} {what} name(s) given ({', '.join(names)}) but the corpus holds "
                        f"{count} per series")
    return list(names)


def _inner_count(table: pa.Table, column: str) -> int:
    """Variates (or covariates) per series of a list-of-lists column; 1 for a plain list; 0 when absent."""
    if column not in table.column_names:
        return 0
    array = table.column(column).combine_chunks()
    if not (pa.types.is_list(array.type.value_type) or pa.types.is_large_list(array.type.value_type)):
        return 1
    counts = np.unique(pc.list_value_length(array).to_numpy(zero_copy_only=False))
    if len(counts) > 1:
        raise DataError(f"column '{column}' holds {counts.tolist()} lists per series: a benchmark over the data "
                        "needs the same variates (covariates) in every series")
    return int(counts[0]) if len(counts) else 0


def split_corpus(corpus: str | Path, output: str | Path, horizon: int, num_windows: int = 1, min_past: int = 1,
                 seasonality: int = 1, dataset: str = "own", target_names: Sequence[str] = (),
                 past_names: Sequence[str] = (), known_names: Sequence[str] = ()) -> SplitSummary:
    """Split the corpus at `corpus` into OUTPUT/train, OUTPUT/benchmark/DATASET, OUTPUT/tasks.yaml and
    OUTPUT/split.json (see the module's docstring). Names: the target and covariate columns (as in the CSV)."""
    if horizon < 1 or num_windows < 1 or min_past < 1:
        raise DataError(f"split: horizon ({horizon}), num_windows ({num_windows}) and min_past ({min_past}) must "
                        "be >= 1")
    table = read_corpus(corpus)
    output = Path(output)
    test_steps = horizon * num_windows
    lengths = _lengths(table.column(TARGET))
    ids = ([str(i) for i in table.column("id").to_pylist()] if "id" in table.column_names
           else [f"series-{row}" for row in range(table.num_rows)])
    long_enough = lengths >= test_steps + min_past + horizon
    targets = _inner_count(table, TARGET)
    past, known = _inner_count(table, PAST_COVARIATES), _inner_count(table, FUTURE_COVARIATES)
    summary = SplitSummary(
        input=str(corpus), dataset=dataset, horizon=horizon, num_windows=num_windows, min_past=min_past,
        seasonality=seasonality, series=table.num_rows, kept=int(long_enough.sum()), test_steps_per_series=test_steps,
        too_short=[name for name, ok in zip(ids, long_enough, strict=True) if not ok],
        target_columns=_named(target_names, targets, "target", corpus, "target"),
        past_covariates=_named(past_names, past, "past", corpus, "past covariate") if past else [],
        known_covariates=_named(known_names, known, "known", corpus, "known covariate") if known else [])
    if not summary.kept:
        raise DataError(f"{corpus}: no series is long enough for the split: each needs {test_steps} test steps "
                        f"({num_windows} x horizon {horizon}) + min_past {min_past} + one validation window "
                        f"({horizon}); the longest has {int(lengths.max()) if len(lengths) else 0}")
    kept = table.filter(pa.array(long_enough))
    if "id" not in kept.column_names:
        kept = kept.append_column("id", pa.array([i for i, ok in zip(ids, long_enough, strict=True) if ok]))
    kept_lengths = lengths[long_enough]

    train_keep = kept_lengths - test_steps
    train = pa.table({name: (truncate_lists(kept.column(name), train_keep)
                             if pa.types.is_list(kept.schema.field(name).type)
                             or pa.types.is_large_list(kept.schema.field(name).type) else kept.column(name))
                      for name in kept.column_names})
    summary.train_values = int(train_keep.sum()) * max(targets, 1)
    save_table(train, output / "train")
    save_table(_fev_table(kept, summary), output / "benchmark" / dataset)
    write_text(output / TASKS_FILE, yaml.safe_dump({"tasks": [_task(summary)]}, sort_keys=False))
    write_text(output / SPLIT_SUMMARY, json.dumps(asdict(summary), indent=2))
    return summary


def _fev_table(kept: pa.Table, summary: SplitSummary) -> pa.Table:
    """The kept series whole, one list column per target variate and covariate (fev's layout)."""
    columns: dict[str, pa.Array] = {"id": kept.column("id").cast(pa.string())}
    if "timestamp" in kept.column_names:
        columns["timestamp"] = kept.column("timestamp")
    else:
        raise DataError(f"{summary.input}: no 'timestamp' column: a benchmark over the data needs each series' "
                        "timestamps (`tsm data convert` writes them)")
    for column, names in ((TARGET, summary.target_columns), (PAST_COVARIATES, summary.past_covariates),
                          (FUTURE_COVARIATES, summary.known_covariates)):
        if not names:
            continue
        nested = pa.types.is_list(kept.schema.field(column).type.value_type)
        for index, name in enumerate(names):
            columns[name] = _variate(kept.column(column), index) if nested else kept.column(column)
    return pa.table(columns)


def _task(summary: SplitSummary) -> dict:
    """The fev task over the test region: num_windows windows of horizon steps ending at each series' end."""
    targets = summary.target_columns
    task = {"dataset_path": "own-data", "dataset_config": summary.dataset, "task_name": summary.dataset,
            "horizon": summary.horizon, "num_windows": summary.num_windows, "window_step_size": summary.horizon,
            "target": targets[0] if len(targets) == 1 else targets, "seasonality": summary.seasonality,
            "eval_metric": "MASE", "extra_metrics": ["WQL"], "quantile_levels": QUANTILE_LEVELS}
    if summary.known_covariates:
        task["known_dynamic_columns"] = summary.known_covariates
    if summary.past_covariates:
        task["past_dynamic_columns"] = summary.past_covariates
    return task
