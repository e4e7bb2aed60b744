"""Reading a run folder (`results/{run}/`) for the report: training stages, benchmark CSVs, the data
checks and Snakemake's per-rule benchmark files. Every reader returns None (or an empty result) for a
part that is missing, so that the report can say so instead of failing. What the trainer and the data
checks write is read through their typed records (tsm.records), never by parsing logs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tsm.layout import (
    CHECKPOINT_PREFIX,
    DATA_CHECK_REPORT,
    DATA_CHECK_SUMMARY,
    DATA_CHECKS,
    FINAL_CHECKPOINT,
    MODEL_CONFIG,
    RESOLVED_CONFIG,
    SEASONAL_NAIVE,
    TENSORBOARD,
    TRAINING_SUMMARY,
)
from tsm.records import DataCheckReport, ModelSelectionRecord, TrainingSummary

logger = logging.getLogger("tsm")

# Stage folders in the order they run; `finetune` replaces both stages in finetune mode.
TUNED = "finetune"  # the fine-tuning stage (finetune mode) and its model's rows in the benchmark CSVs
STAGES = ("stage1", "stage2", TUNED)
BASELINE = SEASONAL_NAIVE  # the baseline's model rows and results file (its one spelling is in tsm.layout)
# benchmark/start.csv (finetune mode): the fine-tune's starting model scored as it was, zero-shot.
START = "start"
# Models in the benchmark tables' order: the start before what was trained from it, the baseline last.
MODEL_ORDER = (START, *STAGES, BASELINE)
# Rules in DAG order, for sorting Snakemake benchmark files (anything else goes after, by name).
RULE_ORDER = ("download_eval", "download_train", "synth_train", "check_data", "train_stage1", "train_stage2",
              "finetune", "evaluate", "report")


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
    summary: TrainingSummary | None = None  # the trainer's training-summary.json
    notes: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path | None:
        final = self.folder / FINAL_CHECKPOINT
        return final if (final / MODEL_CONFIG).is_file() else None

    @property
    def started(self) -> datetime | None:
        return _timestamp(self.summary.legs[0].started) if self.summary and self.summary.legs else None

    @property
    def finished(self) -> datetime | None:
        return _timestamp(self.summary.legs[-1].finished) if self.summary and self.summary.legs else None

    @property
    def seconds(self) -> float | None:
        """Training time over all legs (a resumed run adds one)."""
        return self.summary.seconds if self.summary and self.summary.legs else None

    @property
    def steps(self) -> int | None:
        """Optimizer steps run: the trainer's summary, else the last step logged to TensorBoard."""
        if self.summary is not None:
            return self.summary.steps
        loss = self.scalars.get("train/loss")
        return int(loss.steps[-1]) if loss is not None and len(loss.steps) else None

    @property
    def final_loss(self) -> float | None:
        """The last logged training loss (TensorBoard's last point, the mean over a logging interval, as the
        curves show it), else the trainer's summary's."""
        loss = self.scalars.get("train/loss")
        if loss is not None and len(loss.values):
            return float(loss.values[-1])
        return self.summary.last_loss if self.summary is not None else None


def _timestamp(text: str | None) -> datetime | None:
    """An ISO 8601 time from the summary (UTC); None when missing or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def read_stages(run_dir: Path) -> list[StageRun]:
    return [read_stage(run_dir / name) for name in STAGES if (run_dir / name).is_dir()]


def read_stage(folder: Path) -> StageRun:
    stage = StageRun(name=folder.name, folder=folder)
    config_path = folder / RESOLVED_CONFIG
    if config_path.is_file():
        stage.config_text = config_path.read_text()
        try:
            stage.config = yaml.safe_load(stage.config_text) or {}
        except yaml.YAMLError as error:
            stage.notes.append(f"{config_path} is not valid YAML: {error}")
    else:
        stage.notes.append(f"no resolved config ({config_path} is missing)")
    tensorboard = folder / TENSORBOARD
    if tensorboard.is_dir():
        stage.scalars = read_scalars(tensorboard)
    if not stage.scalars:
        stage.notes.append(f"no TensorBoard scalars under {tensorboard}")
    try:
        stage.summary = TrainingSummary.read(folder)
    except ValueError as error:  # a summary of another shape costs the figures it holds, not the report
        stage.notes.append(str(error))
    else:
        stage.notes += _summary_notes(stage.summary, folder)
    return stage


def _summary_notes(summary: TrainingSummary | None, folder: Path) -> list[str]:
    """What the report should say about how the run went: nothing for a run that finished cleanly."""
    if summary is None:
        return [f"no training summary ({folder / TRAINING_SUMMARY} is missing): its start time, wall time and "
                "status are unknown"]
    notes = []
    if summary.status != "finished":
        status = "still running, or ended without finishing" if summary.status == "running" else summary.status
        notes.append(f"{status} at step {summary.steps:,} of {summary.max_steps:,}")
    if summary.bad_steps:
        notes.append(f"{summary.bad_steps:,} step(s) with a non-finite loss or gradient were skipped")
    return notes


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


def read_benchmark_results(run_dir: Path) -> pd.DataFrame | None:
    """`benchmark/{name}.csv` (written by `tsm evaluate`) concatenated, `model` set to the file's name;
    `regime` (in-domain, zero-shot, ...) and `regime_reason` as written, empty for older files.

    The start model and the stages come first in run order, then other files, then the baseline."""
    folder = run_dir / "benchmark"
    # tsm evaluate's side files: relative scores, and on a fev task file (own data) fev's summaries, leaderboard
    sides = ("-relative", "-fev-summaries", "-leaderboard")
    paths = [p for p in folder.glob("*.csv") if not p.stem.endswith(sides)] if folder.is_dir() else []
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


FEV_FOLDER = "benchmark-fev"  # the DAG's fev tasks: {model}.csv and {model}-fev-summaries.csv per model
FEV_SUMMARIES = "-fev-summaries"


def read_fev_summaries(run_dir: Path) -> pd.DataFrame | None:
    """`benchmark-fev/{model}-fev-summaries.csv` (fev's summary rows, written by `tsm evaluate` on a fev task
    file) concatenated, `model_name` set to the file's model."""
    folder = run_dir / FEV_FOLDER
    paths = sorted(folder.glob(f"*{FEV_SUMMARIES}.csv")) if folder.is_dir() else []
    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        if not {"model_name", "test_error"} <= set(frame.columns):
            raise ValueError(f"{path}: not a fev summary file (no model_name/test_error columns)")
        frames.append(frame.assign(model_name=path.stem.removesuffix(FEV_SUMMARIES)))
    return pd.concat(frames, ignore_index=True) if frames else None


def model_label(model: str) -> str:
    """A short name for a model column value: `.../stage2/final-checkpoint` -> `stage2`."""
    path = Path(model)
    if path.name == FINAL_CHECKPOINT or path.name.startswith(CHECKPOINT_PREFIX):
        return path.parent.name if path.name == FINAL_CHECKPOINT else f"{path.parent.name}/{path.name}"
    return path.name or model


@dataclass
class DataChecks:
    """`data-checks/`: the typed report.json and the printed summary.txt, each None when missing;
    `error` says why a report.json that exists could not be read."""

    folder: Path
    report: DataCheckReport | None
    summary: str | None
    error: str | None = None


def read_data_checks(run_dir: Path) -> DataChecks:
    folder = run_dir / DATA_CHECKS
    report_path, summary_path = folder / DATA_CHECK_REPORT, folder / DATA_CHECK_SUMMARY
    report, error = None, None
    if report_path.is_file():
        try:
            report = DataCheckReport.read(report_path)
        except ValueError as exc:  # another shape: named in the section, the summary.txt is still shown
            error = str(exc)
    summary = summary_path.read_text(errors="replace") if summary_path.is_file() else None
    return DataChecks(folder, report, summary, error)


def read_finetune_selection(run_dir: Path) -> ModelSelectionRecord | None:
    """The fine-tuning stage's model-selection record once the run has finished (the file exists from the
    first evaluation on, the decision only at the end); None otherwise. One of another shape raises."""
    selection = ModelSelectionRecord.read(run_dir / TUNED)
    return selection if selection is not None and selection.finished else None


def read_model_selections(run_dir: Path, models: Sequence[str]) -> dict[str, ModelSelectionRecord]:
    """Each scored model's stage record (`<run_dir>/<model>/model-selection.json`), for those that have one;
    an unreadable one is logged and left out (it only costs a note)."""
    selections = {}
    for model in models:
        try:
            selection = ModelSelectionRecord.read(run_dir / model)
        except (OSError, ValueError) as error:
            logger.warning("report: %s", error)
            continue
        if selection is not None:
            selections[model] = selection
    return selections


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
