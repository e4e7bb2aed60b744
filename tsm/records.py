"""Typed records that a run writes and the report reads, so neither guesses the other's format.

- `TrainingSummary` (`training-summary.json` in a run folder) is what a training run did: one `Leg` per
  start of the trainer (a resumed run adds a leg), rewritten at every checkpoint and at the end, so a run
  that was preempted or crashed still says how far it got. Beside it, the leg state `tsm launch` keeps
  between legs (final-checkpoint parked when SLURM's signal came as the run finished) and the exit code of
  a leg that ended "preempted, checkpoint written".
- `DataCheckReport` (`data-checks/report.json`): what `tsm data check` found in each corpus.
- `ModelSelectionRecord` (`model-selection.json` in a run folder): every score that ranks checkpoints, the
  top-K and, once the run has finished, what final-checkpoint holds and whether fine-tuning beat the start.

Readers ignore keys they do not know (a newer writer's) and default missing ones, so old run folders
still read; a file of another shape is a ValueError naming it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tsm.atomic import write_json
from tsm.layout import (
    FINAL_CHECKPOINT,
    FINISHED_AT_SIGNAL,
    MODEL_SELECTION,
    PARKED_FINAL_CHECKPOINT,
    TRAINING_SUMMARY,
)

SUMMARY_SCHEMA = 1
DATA_CHECK_REPORT_VERSION = 1
# A leg that ends "preempted, checkpoint written" exits with this status (EX_TEMPFAIL): the same command
# resumes. The trainer's CLI returns it and `tsm launch` passes it on, so both import it from here.
PREEMPTED_EXIT_CODE = 75
FINISHED_STATUSES = ("finished", "stopped early")


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The fields of `data` that the dataclass `cls` has (a newer writer's extra fields are ignored)."""
    if not isinstance(data, dict):
        raise TypeError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not a tsm {what} ({type(error).__name__}: {error})") from None


# ------------------------------------------------------------------------------------ training summary
@dataclass
class Leg:
    started: str  # ISO 8601, UTC
    finished: str
    first_step: int  # the step the leg resumed from (0: a fresh start)
    last_step: int
    seconds: float
    status: str  # "running" | "finished" | "preempted" | "stopped early"


@dataclass
class TrainingSummary:
    max_steps: int
    legs: list[Leg] = field(default_factory=list)
    last_loss: float | None = None  # the last logged training loss
    bad_steps: int = 0  # non-finite steps skipped, over all legs
    exported: str | None = None  # what final-checkpoint holds: "checkpoint-N", "start", or None (the last step)
    schema: int = SUMMARY_SCHEMA

    @property
    def steps(self) -> int:
        """Optimizer steps the run has made (its last leg's last step)."""
        return self.legs[-1].last_step if self.legs else 0

    @property
    def seconds(self) -> float:
        return sum(leg.seconds for leg in self.legs)

    @property
    def status(self) -> str:
        return self.legs[-1].status if self.legs else "not started"

    @property
    def finished(self) -> bool:
        """The run is done: it reached max_steps or stopped early (nothing is left to train)."""
        return self.status in FINISHED_STATUSES

    def write(self, run_dir: str | Path) -> Path:
        return write_json(Path(run_dir) / TRAINING_SUMMARY, asdict(self))

    @classmethod
    def read(cls, run_dir: str | Path) -> TrainingSummary | None:
        """The run's summary; None when the run wrote none. A file of another shape is an error naming it."""
        path = Path(run_dir) / TRAINING_SUMMARY
        if not path.is_file():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            summary = cls(**{k: v for k, v in _known(cls, data).items() if k != "legs"})
            summary.legs = [Leg(**leg) for leg in data.get("legs", [])]
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: not a tsm training summary ({error})") from None
        return summary


def run_has_finished(run_dir: str | Path) -> bool:
    """True when the run folder's training summary says the run finished; False when it has none or an
    unreadable one (the next leg then trains, and says what is wrong)."""
    try:
        summary = TrainingSummary.read(run_dir)
    except (ValueError, OSError):
        return False
    return summary is not None and summary.finished


def park_final_checkpoint(run_dir: str | Path, job: str) -> None:
    """Set final-checkpoint aside and mark the run finished for SLURM job `job` (see PARKED_FINAL_CHECKPOINT):
    the workflow's job step, signalled as the run finished, would otherwise fail the job and delete it."""
    run = Path(run_dir)
    if (run / FINAL_CHECKPOINT).is_dir():
        shutil.rmtree(run / PARKED_FINAL_CHECKPOINT, ignore_errors=True)
        (run / FINAL_CHECKPOINT).rename(run / PARKED_FINAL_CHECKPOINT)
    (run / FINISHED_AT_SIGNAL).write_text(job)


def restore_parked_final_checkpoint(run_dir: str | Path, job: str | None, machine_rank: int) -> Path | None:
    """At the start of a leg of job `job`: when the job's last leg finished the run as the signal came, put
    final-checkpoint back (node 0 moves it) and return its path; None otherwise (node 0 removes another job's
    stale mark)."""
    run = Path(run_dir)
    mark = run / FINISHED_AT_SIGNAL
    if job is None or not mark.is_file() or not run_has_finished(run):
        return None
    if mark.read_text().strip() != job:
        if machine_rank == 0:
            mark.unlink(missing_ok=True)
        return None
    if machine_rank == 0 and (run / PARKED_FINAL_CHECKPOINT).is_dir():
        shutil.rmtree(run / FINAL_CHECKPOINT, ignore_errors=True)  # never a newer one: the run had finished
        (run / PARKED_FINAL_CHECKPOINT).rename(run / FINAL_CHECKPOINT)
    return run / FINAL_CHECKPOINT


# ------------------------------------------------------------------------------------- data-check report
@dataclass
class Range:
    min: int
    max: int


@dataclass
class LengthStats:
    """Series lengths (time steps of the first variate) over a corpus."""

    min: int
    p5: float
    median: float
    p95: float
    max: int
    mean: float


@dataclass
class ValueStats:
    """The values of one list column (the target or a covariate), over all series and variates."""

    dtype: str
    variates: Range  # per series
    values: int
    nan: int
    nan_fraction: float
    inf: int
    inf_fraction: float
    float32_overflow: int  # finite float64 values beyond the float32 range (they read as inf)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ValueStats:
        data = _known(cls, data)
        data["variates"] = Range(**_known(Range, data["variates"]))
        return cls(**data)


@dataclass
class SeriesCounts:
    """Series (rows) by kind; a series can count in several kinds. `usable`: long enough and not all NaN."""

    total: int
    usable: int = 0
    empty: int = 0
    null: int = 0
    all_nan: int = 0
    constant: int = 0
    too_short: int = 0  # shorter than min_length (min_past + prediction_length); 0 when min_length is None
    with_nan: int = 0
    with_inf: int = 0
    timestamp_length_mismatch: int = 0
    unsorted_timestamps: int = 0


@dataclass
class DatasetCheck:
    """One corpus' checks. A corpus that cannot be opened, or whose columns have the wrong types, has only
    `dataset`, `ok` (False), `errors`, `warnings` and `min_length` (and `schema`/`num_series` once opened)."""

    dataset: str  # the corpus folder, as given
    ok: bool
    errors: list[str] = field(default_factory=list)  # fatal: each names the dataset, row and column
    warnings: list[str] = field(default_factory=list)
    min_length: int | None = None
    schema: dict[str, str] = field(default_factory=dict)  # column -> Arrow type
    num_series: int | None = None
    length: LengthStats | None = None
    target: ValueStats | None = None
    series: SeriesCounts | None = None
    covariates: dict[str, ValueStats] = field(default_factory=dict)
    seconds: float | None = None
    series_per_second: int | None = None

    @property
    def value_columns(self) -> dict[str, ValueStats]:
        """The target's and every covariate's value statistics, target first (those the corpus got to)."""
        return {**({"target": self.target} if self.target else {}), **self.covariates}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetCheck:
        data = _known(cls, data)
        data["length"] = LengthStats(**_known(LengthStats, data["length"])) if data.get("length") else None
        data["series"] = SeriesCounts(**_known(SeriesCounts, data["series"])) if data.get("series") else None
        data["target"] = ValueStats.from_json(data["target"]) if data.get("target") else None
        data["covariates"] = {name: ValueStats.from_json(stats)
                              for name, stats in (data.get("covariates") or {}).items()}
        return cls(**data)


@dataclass
class DataCheckReport:
    """`report.json`: every corpus checked by one `tsm data check`; `ok` when all are usable."""

    ok: bool
    min_length: int | None
    datasets: list[DatasetCheck]
    version: int = DATA_CHECK_REPORT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DataCheckReport:
        data = _known(cls, data)
        data["datasets"] = [DatasetCheck.from_json(d) for d in data.get("datasets", [])]
        return cls(**data)

    def write(self, path: str | Path) -> Path:
        return write_json(path, self.to_json())  # a report that exists is a complete one

    @classmethod
    def read(cls, path: str | Path) -> DataCheckReport:
        """The report at `path`; a file of another shape is an error naming it."""
        path = Path(path)
        try:
            return cls.from_json(_read_json(path, "data-check report"))
        except (TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"{path}: not a tsm data-check report ({type(error).__name__}: {error})") from None


# ---------------------------------------------------------------------------------- model selection
# What the trainer decides when the run finishes; absent from the file until then.
SELECTION_DECISION = ("start_score", "best_step", "best_score", "exported", "beat_start", "verdict")


@dataclass
class ModelSelectionRecord:
    """`model-selection.json`: each evaluation that ranks checkpoints (`history`: {"step", "score", and the
    recorded scores beside it}; step 0 is the starting model), the top-K checkpoints (`best_checkpoints`,
    entries of history with their "path"), and, once the run has finished, the decision: what final-checkpoint
    holds (`exported`: "checkpoint-N", "start", or None for the last step's weights) and whether any fine-tuned
    checkpoint beat the start."""

    metric: str | None = None  # the score that ranks checkpoints (lower is better)
    lower_is_better: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)
    best_checkpoints: list[dict[str, Any]] = field(default_factory=list)
    start_score: float | None = None
    best_step: int | None = None  # the best fine-tuned checkpoint (after the start)
    best_score: float | None = None
    exported: str | None = None
    beat_start: bool | None = None  # None: the run has not finished
    verdict: str | None = None  # the trainer's sentence for the log

    @property
    def finished(self) -> bool:
        return self.beat_start is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.finished:  # as the trainer has always written it: the decision keys appear at the end
            data = {k: v for k, v in data.items() if k not in SELECTION_DECISION}
        return data

    def write(self, run_dir: str | Path) -> Path:
        return write_json(Path(run_dir) / MODEL_SELECTION, self.to_json())

    @classmethod
    def read(cls, run_dir: str | Path) -> ModelSelectionRecord | None:
        """The run folder's record; None when it has none. A file of another shape is an error naming it."""
        path = Path(run_dir) / MODEL_SELECTION
        if not path.is_file():
            return None
        data = _read_json(path, "model-selection record")
        try:
            record = cls(**_known(cls, data))
            for entry in record.history:
                if not isinstance(entry, dict) or not {"step", "score"} <= set(entry):
                    raise TypeError(f"history entry {entry!r} lacks 'step' or 'score'")
        except TypeError as error:
            raise ValueError(f"{path}: not a tsm model-selection record ({error})") from None
        return record
