"""Typed records that a run writes and the report reads, so neither guesses the other's format.

`TrainingSummary` (`training-summary.json` in a run folder) is what a training run did: one `Leg` per
start of the trainer (a resumed run adds a leg), rewritten at every checkpoint and at the end, so a run
that was preempted or crashed still says how far it got.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tsm.atomic import write_json
from tsm.layout import TRAINING_SUMMARY

SUMMARY_SCHEMA = 1


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
            known = {f.name for f in fields(cls)}
            summary = cls(**{k: v for k, v in data.items() if k in known and k != "legs"})
            summary.legs = [Leg(**leg) for leg in data.get("legs", [])]
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: not a tsm training summary ({error})") from None
        return summary
