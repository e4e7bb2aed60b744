"""Reading a benchmark dataset's series: the saved `datasets` folder as one Arrow table, and its list
columns as numpy arrays (zero-copy views into the memory map where the type allows). The benchmark runner
(tsm.eval.benchmark), the fev tasks' series (tsm.eval.fev_tasks) and the leakage check all read series here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.types as pat


def read_table(folder: Path) -> pa.Table:
    """The saved `datasets` folder as an Arrow table (its `train` split, else its first); a ValueError naming
    the folder when it is not one."""
    import datasets  # slow to import: only when a benchmark is read

    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(
            f"{folder} is not a saved `datasets` folder ({error}); rebuild it with `tsm data ...`"
        ) from error
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    # Arrow view of the memory-mapped files: no per-row Python conversion.
    return loaded.with_format("arrow")[:]


def read_series(table: pa.Table, folder: Path) -> list[np.ndarray]:
    """Every numeric list column but `timestamp` holds one univariate series per row (the Chronos
    script's `to_gluonts_univariate`); series are ordered row by row. `folder` names the data in errors."""
    columns = []
    for field in table.schema:
        list_like = pat.is_list(field.type) or pat.is_large_list(field.type)
        if field.name == "timestamp" or not list_like:
            continue
        if not (pat.is_floating(field.type.value_type) or pat.is_integer(field.type.value_type)):
            raise ValueError(
                f"{folder}: column '{field.name}' holds {field.type.value_type} lists; benchmark datasets "
                f"need numeric univariate series (a list of numbers per row)"
            )
        columns.append(column_to_arrays(table.column(field.name)))
    if not columns:
        raise ValueError(f"{folder}: no series column (a list of numbers per row, e.g. 'target') found")
    return [column[row] for row in range(len(columns[0])) for column in columns]


def column_to_arrays(column: pa.ChunkedArray, as_float: bool = True) -> list[np.ndarray]:
    """Zero-copy views into the memory-mapped values where the stored type allows (float without
    nulls), by slicing the flat values with the list offsets: no Python object per value. `as_float`:
    other value types become float64 (as_float=False keeps them, e.g. datetime64 timestamps)."""
    arrays: list[np.ndarray] = []
    for chunk in column.chunks:
        offsets = chunk.offsets.to_numpy()
        values = chunk.values.to_numpy(zero_copy_only=False)  # nulls become NaN
        if as_float and not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float64)
        arrays.extend(values[start:end] for start, end in zip(offsets[:-1], offsets[1:], strict=True))
    return arrays
