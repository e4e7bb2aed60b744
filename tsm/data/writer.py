"""Writing corpora: `datasets` folders that appear atomically, and Arrow list columns from flat values."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from tsm.atomic import replace_folder, temporary_path
from tsm.data.arrow import DataError


def save_atomically(dataset, path: str | Path, finish: Callable[[Path], None] | None = None) -> Path:
    """`save_to_disk` into a hidden sibling, let `finish` add files to it (a marker), then rename.

    A reader (or a later run) never sees a half-written folder under `path`: it is either the old
    folder, the new complete one, or absent (tsm.atomic's naming: a crash leaves `.tmp-NAME.PID` behind).
    """
    path = Path(path)
    if len(dataset) == 0:  # datasets writes zero shards, which load_from_disk then cannot open
        raise DataError(f"refusing to write {path}: there are no series to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path, unique=True)  # several processes may build the same corpus at once
    shutil.rmtree(temporary, ignore_errors=True)
    dataset.save_to_disk(str(temporary))
    if finish is not None:
        finish(temporary)
    return replace_folder(temporary, path)


def save_table(table: pa.Table, path: str | Path) -> Path:
    import datasets
    from datasets.table import InMemoryTable

    return save_atomically(datasets.Dataset(InMemoryTable(table)), path)


def list_array(values: pa.Array, lengths: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    if offsets[-1] < 2**31 - 1:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)
