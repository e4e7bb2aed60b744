"""Checkpoint ranking, in one place: which checkpoints are kept, when a run stops early, what it exports.

Every evaluation that ranks checkpoints (held-out validation when it is on, else the benchmark) records its
scores here; step 0 is the starting model, scored before the first step. From that history come the top-K
checkpoints (never rotated away, `best-checkpoint` links to the best), early stopping, and, with
`export: best`, the final model: the best of the start and every evaluated checkpoint, so fine-tuning never
exports a model worse than the one it started from. Everything is recorded in `model-selection.json`
(tsm.records.ModelSelectionRecord, which the report reads), so a resumed run keeps counting where the
interrupted one stopped.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from tsm.atomic import remove_folder, replace_symlink
from tsm.layout import BEST_CHECKPOINT_LINK, checkpoint_name, list_checkpoints
from tsm.records import ModelSelectionRecord

logger = logging.getLogger("tsm")

# Scores kept beside the ranking score in each history entry (what the report and a reader compare).
RECORDED_SCORES = ("relative_wql", "relative_mase", "validation_loss", "validation_wql")


class ModelSelection:
    def __init__(self, output_dir: Path, metric: str | None, patience: int | None, resume_step: int,
                 top_k: int = 1):
        self.output_dir = Path(output_dir)
        self.metric = metric  # None: nothing ranks checkpoints (no evaluation configured)
        self.patience = patience
        self.top_k = top_k
        saved = ModelSelectionRecord.read(self.output_dir)
        # Evaluations after the checkpoint we resume from belong to a future this run will redo.
        self.history: list[dict[str, Any]] = [e for e in (saved.history if saved else []) if e["step"] <= resume_step]
        self.summary: dict[str, Any] = {}  # what finish() decided: ModelSelectionRecord's decision fields

    @property
    def start_score(self) -> float | None:
        return next((e["score"] for e in self.history if e["step"] == 0), None)

    def best(self, after_start: bool = False) -> dict[str, Any] | None:
        """The best evaluation so far (lowest score; the earliest of equals, so a tie never beats the start);
        with after_start, the best fine-tuned one."""
        ranked = self._ranked(after_start)
        return ranked[0] if ranked else None

    def _ranked(self, after_start: bool) -> list[dict[str, Any]]:
        finite = [e for e in self.history if math.isfinite(e["score"]) and (e["step"] > 0 or not after_start)]
        return sorted(finite, key=lambda e: (e["score"], e["step"]))

    def best_checkpoints(self) -> list[dict[str, Any]]:
        """The top-K evaluated checkpoints (the start has no checkpoint), best first."""
        return [{**e, "path": checkpoint_name(e["step"])} for e in self._ranked(after_start=True)[: self.top_k]]

    def record(self, step: int, scores: dict[str, float], write: bool) -> None:
        """Record step's scores (all ranks call it; `write` on the main process updates the file and link)."""
        if self.metric is None or self.metric not in scores:
            return
        score = float(scores[self.metric])
        if not math.isfinite(score):
            logger.warning("Step %d: %s is %s; not ranked among the best checkpoints", step, self.metric, score)
        entry = {"step": step, "score": score, **{k: scores[k] for k in RECORDED_SCORES if k in scores}}
        self.history = [e for e in self.history if e["step"] != step] + [entry]
        if not write:
            return
        self._write()
        best = self.best_checkpoints()
        if step > 0 and best:
            replace_symlink(self.output_dir / BEST_CHECKPOINT_LINK, best[0]["path"])  # relative: the folder can move
            logger.info("Best checkpoints by %s: %s", self.metric,
                        ", ".join(f"{e['path']} ({e['score']:.4f})" for e in best))

    def rotate(self, keep: int | None) -> None:
        """Keep the newest `keep` checkpoints and the top-K; delete the rest (main process only)."""
        if keep is None:
            return
        protected = {e["path"] for e in self.best_checkpoints()}
        for _, path in list_checkpoints(self.output_dir)[:-keep]:
            if path.name not in protected:
                remove_folder(path)
                logger.info("Removed %s (save_total_limit=%d)", path, keep)

    def evaluations_since_best(self) -> int:
        best = self.best()
        return 0 if best is None else sum(e["step"] > best["step"] for e in self.history)

    def should_stop_early(self) -> bool:
        return self.patience is not None and self.evaluations_since_best() >= self.patience

    def log_early_stop(self, step: int, resumed_at: int) -> None:
        if step == resumed_at:
            logger.info("This run stopped early at step %d; nothing left to train", step)
        else:
            logger.info("Early stopping at step %d: %s did not improve in %d evaluations (best: step %d)",
                        step, self.metric, self.patience, self.best()["step"])

    def export_step(self, exports_best: bool) -> int | None:
        """Which evaluated step final-checkpoint holds (0: the starting model); None: the last step's weights."""
        best = self.best()
        return best["step"] if exports_best and best is not None else None

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
            "start_score": start,
            "best_step": best_tuned["step"] if best_tuned else None,
            "best_score": best_tuned["score"] if best_tuned else None,
            "exported": None if exported_step is None else
            ("start" if exported_step == 0 else checkpoint_name(exported_step)),
            "beat_start": beat_start,
            "verdict": verdict,
        }
        if write:
            self._write()
        return verdict

    def _write(self) -> None:
        ModelSelectionRecord(metric=self.metric, history=self.history, best_checkpoints=self.best_checkpoints(),
                             **self.summary).write(self.output_dir)
