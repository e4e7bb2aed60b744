"""The run's summary (`training-summary.json`, tsm.records.TrainingSummary): one leg per start of the
trainer, rewritten at every checkpoint and at the end, so the report reads what the run did from a typed
file, not from the log's wording."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from tsm.records import Leg, TrainingSummary


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunSummary:
    def __init__(self, output_dir: Path, max_steps: int, start_step: int, write: bool):
        self.output_dir = output_dir
        self.write_enabled = write  # the main process writes
        saved = TrainingSummary.read(output_dir) if write else None
        self.summary = saved or TrainingSummary(max_steps=max_steps)
        self.summary.max_steps = max_steps
        # Legs that got past the checkpoint we resume from are a future this run redoes.
        self.summary.legs = [leg for leg in self.summary.legs if leg.last_step <= start_step]
        self.leg = Leg(started=_now(), finished=_now(), first_step=start_step, last_step=start_step,
                       seconds=0.0, status="running")
        self.summary.legs.append(self.leg)
        self._started = time.perf_counter()
        if write:  # at once: a leg that crashes before its first checkpoint still shows it made no progress
            self.summary.write(output_dir)

    def update(self, step: int, loss: float | None, bad_steps: int, status: str = "running",
               exported: str | None = None) -> None:
        self.leg.last_step, self.leg.status, self.leg.finished = step, status, _now()
        self.leg.seconds = time.perf_counter() - self._started
        self.summary.last_loss = loss if loss is not None else self.summary.last_loss
        self.summary.bad_steps = bad_steps
        self.summary.exported = exported
        if self.write_enabled:
            self.summary.write(self.output_dir)
