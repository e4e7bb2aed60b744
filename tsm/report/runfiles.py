"""Reading a run folder (`results/{run}/`) for the report: training stages, benchmark CSVs, data
validation and Snakemake's per-rule benchmark files. Every reader returns None (or an empty result)
for a part that is missing, so that the report can say so instead of failing."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

logger = logging.getLogger("tsm")

# Stage folders in the order they run; `finetune` replaces both stages in finetune mode.
STAGES = ("stage1", "stage2", "finetune")
BASELINE = "seasonal-naive"
# benchmark/start.csv (finetune mode): the fine-tune's starting model scored as it was, zero-shot.
START = "start"
# Models in the benchmark tables' order: the start before what was trained from it, the baseline last.
MODEL_ORDER = (START, *STAGES, BASELINE)
# Rules in DAG order, for sorting Snakemake benchmark files (anything else goes after, by name).
RULE_ORDER = ("download_eval", "download_train", "synth_train", "validate_data", "train_stage1", "train_stage2",
              "finetune", "evaluate", "report")
_LOG_LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) ")
_DONE = re.compile(r"Done: (\d+) steps in ([\d.]+)s")
_LOSS = re.compile(r"\| loss=([\d.eE+-]+) ")


@dataclass
class Scalars:
    """One TensorBoard scalar tag: steps ascending, one value per step."""

    steps: np.ndarray
    values: np.ndarray


@dataclass
class StageRun:
    """What one training stage left in its folder."""

    name: str
    folder: Path
    config_text: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, Scalars] = field(default_factory=dict)
    started: datetime | None = None
    finished: datetime | None = None
    done_steps: int | None = None  # from the log's closing line(s)
    seconds: float | None = None
    last_logged_loss: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path | None:
        final = self.folder / "final-checkpoint"
        return final if (final / "config.json").is_file() else None

    @property
    def steps(self) -> int | None:
        """Optimizer steps run: the last logged step, else the log's count, else the configured steps."""
        loss = self.scalars.get("train/loss")
        if loss is not None and len(loss.steps):
            return int(loss.steps[-1])
        return self.done_steps if self.done_steps is not None else self.config.get("max_steps")

    @property
    def final_loss(self) -> float | None:
        loss = self.scalars.get("train/loss")
        return float(loss.values[-1]) if loss is not None and len(loss.values) else self.last_logged_loss


def read_stages(run_dir: Path) -> list[StageRun]:
    return [read_stage(run_dir / name) for name in STAGES if (run_dir / name).is_dir()]


def read_stage(folder: Path) -> StageRun:
    stage = StageRun(name=folder.name, folder=folder)
    config_path = folder / "resolved_config.yaml"
    if config_path.is_file():
        stage.config_text = config_path.read_text()
        try:
            stage.config = yaml.safe_load(stage.config_text) or {}
        except yaml.YAMLError as error:
            stage.notes.append(f"{config_path} is not valid YAML: {error}")
    else:
        stage.notes.append(f"no resolved config ({config_path} is missing)")
    tensorboard = folder / "tensorboard"
    if tensorboard.is_dir():
        stage.scalars = read_scalars(tensorboard)
    if not stage.scalars:
        stage.notes.append(f"no TensorBoard scalars under {tensorboard}")
    _read_training_log(folder / "training.log", stage)
    return stage


def read_scalars(folder: Path) -> dict[str, Scalars]:
    """Every scalar tag of the event files in `folder` (all points, not TensorBoard's sample)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
    try:
        accumulator.Reload()
    except Exception as error:  # a truncated event file (run killed mid-write) must not stop the report
        logger.warning("could not read TensorBoard events in %s: %s", folder, error)
        return {}
    scalars = {}
    for tag in accumulator.Tags().get("scalars", []):
        # A resumed run logs some steps twice: keep the last value written for each step.
        by_step = {event.step: event.value for event in accumulator.Scalars(tag)}
        steps = np.array(sorted(by_step), dtype=np.int64)
        scalars[tag] = Scalars(steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return scalars


def _read_training_log(path: Path, stage: StageRun) -> None:
    if not path.is_file():
        stage.notes.append(f"no training log ({path} is missing)")
        return
    times, done_steps, seconds = [], 0, 0.0
    for line in path.read_text(errors="replace").splitlines():
        if stamp := _LOG_LINE.match(line):
            times.append(datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
        if done := _DONE.search(line):  # one per (resumed) run appended to the log
            done_steps += int(done.group(1))
            seconds += float(done.group(2))
            stage.done_steps, stage.seconds = done_steps, seconds
        if loss := _LOSS.search(line):
            stage.last_logged_loss = float(loss.group(1))
    if times:
        stage.started, stage.finished = times[0], times[-1]
        if stage.seconds is None:  # unfinished run: the log's span is the best estimate
            stage.seconds = (times[-1] - times[0]).total_seconds()


def read_benchmark_results(run_dir: Path) -> pd.DataFrame | None:
    """`benchmark/{name}.csv` (written by `tsm evaluate`) concatenated, `model` set to the file's name;
    `regime` (in-domain, zero-shot, ...) and `regime_reason` as written, empty for older files.

    The start model and the stages come first in run order, then other files, then the baseline."""
    folder = run_dir / "benchmark"
    paths = [p for p in folder.glob("*.csv") if not p.stem.endswith("-relative")] if folder.is_dir() else []
    order = {name: index for index, name in enumerate(MODEL_ORDER)}
    paths.sort(key=lambda p: (order.get(p.stem, len(MODEL_ORDER) - 1.5), p.stem))
    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        missing = {"dataset", "MASE", "WQL"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected dataset,model,MASE,WQL")
        # One model per file (the DAG's layout): the file names it. A file of several models keeps theirs.
        models = frame["model"].astype(str) if "model" in frame else pd.Series([path.stem] * len(frame))
        labels = [path.stem] * len(frame) if models.nunique() <= 1 else [model_label(m) for m in models]
        frame = frame.assign(model=labels)
        for column in ("regime", "regime_reason"):
            frame[column] = frame[column].fillna("").astype(str) if column in frame else ""
        frames.append(frame[["dataset", "model", "MASE", "WQL", "regime", "regime_reason"]])
    return pd.concat(frames, ignore_index=True) if frames else None


def model_label(model: str) -> str:
    """A short name for a model column value: `.../stage2/final-checkpoint` -> `stage2`."""
    path = Path(model)
    if path.name == "final-checkpoint" or path.name.startswith("checkpoint-"):
        return path.parent.name if path.name == "final-checkpoint" else f"{path.parent.name}/{path.name}"
    return path.name or model


@dataclass
class Validation:
    report: Any | None
    summary: str | None


def read_validation(run_dir: Path) -> Validation:
    folder = run_dir / "validation"
    report_path, summary_path = folder / "report.json", folder / "summary.txt"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    summary = summary_path.read_text(errors="replace") if summary_path.is_file() else None
    return Validation(report, summary)


def read_rule_times(run_dir: Path) -> pd.DataFrame | None:
    """One row per Snakemake benchmark file (`benchmarks/*.tsv`): rule, seconds, h:m:s, peak RSS (MB),
    CPU seconds, mean load; a file with several repeats gives their mean."""
    folder = run_dir / "benchmarks"
    paths = sorted(folder.glob("*.tsv")) if folder.is_dir() else []
    rows = []
    for path in paths:
        frame = pd.read_csv(path, sep="\t")
        if "s" not in frame.columns or frame.empty:
            logger.warning("%s is not a Snakemake benchmark file (no 's' column); skipped", path)
            continue
        numeric = frame.apply(pd.to_numeric, errors="coerce")  # Snakemake writes '-' where it measured nothing
        rows.append({
            "rule": path.stem,
            "seconds": numeric["s"].mean(),
            "max_rss_mb": numeric["max_rss"].mean() if "max_rss" in numeric else np.nan,
            "cpu_seconds": numeric["cpu_time"].mean() if "cpu_time" in numeric else np.nan,
            "mean_load": numeric["mean_load"].mean() if "mean_load" in numeric else np.nan,
            "repeats": len(frame),
        })
    if not rows:
        return None
    table = pd.DataFrame(rows)
    table["order"] = [_rule_rank(rule) for rule in table["rule"]]
    return table.sort_values(["order", "rule"]).drop(columns="order").reset_index(drop=True)


def _rule_rank(rule: str) -> int:
    for index, name in enumerate(RULE_ORDER):
        if rule == name or rule.startswith(name + "_") or rule.startswith(name + "-"):
            return index
    return len(RULE_ORDER)
