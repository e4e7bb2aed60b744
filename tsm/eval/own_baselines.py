"""The baselines a user names for a run on their own data (`data.local.baselines: {name: model}`).

Each is scored beside the start and the fine-tune on the user's test windows: its name becomes a file name
(`benchmark/{name}.csv`), a model row in the report and a `tsm evaluate-series --model NAME=MODEL` item, so it
must be safe in a file name and distinct from the run's own models; a local checkpoint folder must exist before
the DAG is built (the workflow makes it an input). Light on imports: the workflow reads this at parse time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from tsm.config import ConfigError
from tsm.hub import is_local_model
from tsm.layout import MODEL_CONFIG, SEASONAL_NAIVE

KEY = "data.local.baselines"
# The run's own models (the stages, the fine-tune's start, the built-in baseline): their files and rows.
RESERVED = ("start", "finetune", "stage1", "stage2", SEASONAL_NAIVE)
# Stems of the files `tsm evaluate` writes beside a model's scores: the report skips them as side files.
SIDE_FILE_SUFFIXES = ("-relative", "-fev-summaries", "-leaderboard")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def name_problem(name: object) -> str | None:
    """Why `name` cannot name a baseline (None: it can)."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        return ("expected letters, digits, '_', '.' or '-', starting with a letter or digit (the name becomes "
                "the file benchmark/<name>.csv)")
    if name.casefold() in (reserved.casefold() for reserved in RESERVED):
        return f"the run's own models are named {', '.join(RESERVED)}: choose another name"
    if name.endswith(SIDE_FILE_SUFFIXES):
        return (f"a name ending in {' or '.join(SIDE_FILE_SUFFIXES)} would be read as a side file of tsm evaluate's "
                "output, not as a model's scores")
    return None


def model_problem(model: object) -> str | None:
    """Why `model` cannot be scored (None: it can): a local folder (relative to the current folder, the
    workflow's) must exist and hold a model's config.json."""
    if not isinstance(model, str) or not model.strip():
        return f"expected a Chronos-2 checkpoint folder, a hub id (owner/name) or {SEASONAL_NAIVE}"
    if model == SEASONAL_NAIVE or not is_local_model(model):
        return None
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return (f"no folder {model} (a local checkpoint, e.g. an earlier run's finetune/final-checkpoint; a hub id "
                "is owner/name)")
    if not (folder / MODEL_CONFIG).is_file():
        return f"{model} holds no {MODEL_CONFIG}: not a saved Chronos-2 checkpoint"
    return None


def check_baselines(baselines: Mapping[str, str] | None) -> dict[str, str]:
    """The named baselines, in the config's order, once every name and model is usable; else one ConfigError
    naming each bad `data.local.baselines.<name>` and why."""
    baselines = dict(baselines or {})
    problems, seen = [], {}
    for name, model in baselines.items():
        problem = name_problem(name) or model_problem(model)
        if not problem and name.casefold() in seen:  # benchmark/A.csv and a.csv are one file on some disks
            problem = f"differs from the baseline {seen[name.casefold()]} only in case: choose another name"
        if isinstance(name, str):
            seen.setdefault(name.casefold(), name)
        if problem:
            problems.append(f"{KEY}.{name} ({model!r}): {problem}")
    if problems:
        raise ConfigError("; ".join(problems))
    return baselines


def local_baseline_folders(baselines: Mapping[str, str]) -> list[str]:
    """The baselines that are local folders (the DAG's inputs); hub ids and seasonal naive need none."""
    return [model for model in baselines.values() if model != SEASONAL_NAIVE and is_local_model(model)]
