"""Writes that appear at once: a reader sees the old file or folder, the new complete one, or nothing.

One naming scheme serves every writer (checkpoints, corpora, reports, JSON records): a new version is
written as `.tmp-NAME` beside its target and renamed into place; a folder being replaced is first moved
aside as `.old-NAME`. `recover(folder)` undoes what a crash left in a folder: temporaries are dropped,
and a version moved aside whose replacement never arrived is put back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger("tsm")

TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"


def temporary_path(path: str | Path, unique: bool = False) -> Path:
    """Where a new version of `path` is written. `unique` adds the process id, for targets that several
    processes may write at once (each then renames its own complete copy into place)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{path.name}" + (f".{os.getpid()}" if unique else ""))


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path, unique=True)
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def replace_symlink(link: str | Path, target: str) -> None:
    """Point `link` at `target` (relative targets keep working when the folder moves)."""
    link = Path(link)
    temporary = temporary_path(link, unique=True)
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target)
    os.replace(temporary, link)


def fresh_temporary_folder(final: str | Path, unique: bool = False) -> Path:
    """An empty `.tmp-NAME` folder to write a new version of `final` into."""
    temporary = temporary_path(final, unique)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    return temporary


def replace_folder(temporary: str | Path, final: str | Path) -> Path:
    """Move a complete temporary folder into place. An older `final` is moved aside first, so a crash
    between the two renames leaves `.old-NAME`, which `recover` puts back."""
    temporary, final = Path(temporary), Path(final)
    if final.exists():
        old = final.with_name(OLD_PREFIX + final.name)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(temporary, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, final)
    return final


def remove_folder(path: str | Path) -> None:
    """Delete a folder without ever showing it half deleted: it is renamed to a temporary name first."""
    path = Path(path)
    doomed = path.with_name(f"{TMP_PREFIX}removing-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def recover(folder: str | Path) -> None:
    """Undo what a crash mid-write left in `folder`: a version moved aside for a replacement that never
    arrived is put back; temporaries are removed. Call it where no other process is writing."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for old in folder.glob(OLD_PREFIX + "*"):
        final = old.with_name(old.name[len(OLD_PREFIX):])
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
            logger.warning("Restored %s: a crash interrupted its replacement", final)
    for temporary in folder.glob(TMP_PREFIX + "*"):
        logger.warning("Removing %s: left by a write that a crash interrupted", temporary)
        if temporary.is_dir() and not temporary.is_symlink():
            shutil.rmtree(temporary, ignore_errors=True)
        else:
            temporary.unlink(missing_ok=True)
