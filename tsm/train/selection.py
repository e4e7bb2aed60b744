"""Which weights a run exports, and when it stops early.

Every evaluation that ranks checkpoints (validation when it is on, else the benchmark) records its score
here; step 0 is the starting model, scored before the first step. With `export: best` the final model is
the best of the start and every evaluated checkpoint, so fine-tuning never exports a model worse than the
one it started from. The history lives in `model-selection.json`, so a resumed run keeps counting where
the interrupted one stopped.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger("tsm")

SELECTION_FILE = "model-selection.json"


class ModelSelection:
    def __init__(self, output_dir: Path, metric: str, patience: int | None, resume_step: int):
        self.path = output_dir / SELECTION_FILE
        self.metric = metric
        self.patience = patience
        saved = json.loads(self.path.read_text()) if self.path.is_file() else {}
        # Evaluations after the checkpoint we resume from belong to a future this run will redo.
        self.history: list[dict[str, Any]] = [e for e in saved.get("history", []) if e["step"] <= resume_step]
        self.summary: dict[str, Any] = {}  # what finish() decided

    @property
    def start_score(self) -> float | None:
        return next((e["score"] for e in self.history if e["step"] == 0), None)

    def best(self, after_start: bool = False) -> dict[str, Any] | None:
        """The best evaluation so far (lowest score; the earliest of equals, so a tie never beats the start);
        with after_start, the best fine-tuned one."""
        finite = [e for e in self.history if math.isfinite(e["score"]) and (e["step"] > 0 or not after_start)]
        return min(finite, key=lambda e: (e["score"], e["step"])) if finite else None

    def record(self, step: int, score: float, write: bool) -> None:
        self.history = [e for e in self.history if e["step"] != step] + [{"step": step, "score": score}]
        if write:
            self._write()

    def evaluations_since_best(self) -> int:
        best = self.best()
        return 0 if best is None else sum(e["step"] > best["step"] for e in self.history)

    def should_stop_early(self) -> bool:
        return self.patience is not None and self.evaluations_since_best() >= self.patience

    def finish(self, exported_step: int | None, write: bool) -> str:
        """Record what final-checkpoint holds; returns the sentence for the log and the report."""
        start = self.start_score
        best = self.best()
        best_tuned = self.best(after_start=True)
        beat_start = start is not None and best is not None and best["step"] > 0
        if exported_step is None:
            verdict = "final-checkpoint holds the last step's weights (export: last)"
        elif start is None:
            verdict = f"final-checkpoint holds checkpoint-{exported_step}, the best by {self.metric}"
        elif beat_start:
            verdict = (f"Fine-tuning beat the start: {self.metric} {start:.4g} -> {best['score']:.4g} "
                       f"at step {best['step']}; final-checkpoint holds checkpoint-{best['step']}")
        else:
            tuned_text = (f"best fine-tuned {best_tuned['score']:.4g} at step {best_tuned['step']}" if best_tuned
                          else "no fine-tuned checkpoint scored a finite value")
            verdict = (f"Nothing beat the start ({self.metric} {start:.4g}; {tuned_text}): "
                       "final-checkpoint holds the starting model")
        self.summary = {
            "metric": self.metric,
            "start_score": start,
            "best_step": best_tuned["step"] if best_tuned else None,
            "best_score": best_tuned["score"] if best_tuned else None,
            "exported": None if exported_step is None else
            ("start" if exported_step == 0 else f"checkpoint-{exported_step}"),
            "beat_start": beat_start,
            "verdict": verdict,
        }
        if write:
            self._write()
        return verdict

    def _write(self) -> None:
        data = {"metric": self.metric, "lower_is_better": True, "history": self.history, **self.summary}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)
