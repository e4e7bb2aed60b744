"""What the report concludes, decided from the run's records and results; the sections only render it.

- `benchmark_verdict`: did the final model beat seasonal naive on aggregate relative WQL and MASE (and,
  after a context extension, is stage 2 at least as good as stage 1)?
- `finetune_verdict`: did fine-tuning beat its start, and what final-checkpoint holds (model-selection.json).
- `finetune_comparison`: on how many benchmark datasets fine-tuning lowered WQL.
- `selection_notes`: how each scored model's weights were chosen.
- `data_check_verdict`: which corpora failed the data checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tsm.layout import FINAL_CHECKPOINT
from tsm.records import DataCheckReport, ModelSelectionRecord
from tsm.report.runfiles import BASELINE, START, TUNED

FINAL_MODELS = ("stage2", TUNED)  # the model the run exists to produce, in order of preference


@dataclass
class Verdict:
    text: str
    beat: bool | None  # None: cannot tell


def relative_or_none(results: pd.DataFrame | None) -> pd.DataFrame | None:
    """Aggregate relative scores (relative_scores), over the datasets the baseline was scored on."""
    from tsm.eval.benchmark import relative_scores

    if results is None or BASELINE not in set(results["model"]):
        return None
    baseline_datasets = set(results.loc[results["model"] == BASELINE, "dataset"])
    return relative_scores(results[results["dataset"].isin(baseline_datasets)], baseline=BASELINE)


def _against_naive(metric: str, score: float) -> str:
    change = "lower" if score < 1.0 else "higher"
    return f"{metric} {score:.3f} ({abs(1 - score) * 100:.1f}% {change})"


def benchmark_verdict(relative: pd.DataFrame | None, results: pd.DataFrame | None) -> Verdict:
    """The plain sentence: did the final model beat seasonal naive on aggregate relative WQL and MASE, and
    (after a context extension) is stage 2 at least as good as stage 1 on both?"""
    if results is None:
        return Verdict("No benchmark results, so no comparison with seasonal naive.", None)
    if relative is None:
        return Verdict("No seasonal-naive results, so no aggregate relative score.", None)
    final = next((m for m in FINAL_MODELS if m in set(relative["model"])), None)
    if final is None:
        return Verdict("No stage-2 benchmark results: cannot say whether stage 2 beat seasonal naive.", None)
    rows = relative.set_index("model")
    name = "Stage 2" if final == "stage2" else "The fine-tuned model"
    scores = {metric: float(rows.loc[final, metric]) for metric in ("WQL", "MASE")}
    count = int(rows.loc[final, "datasets"])
    broken = [f"{metric} is not finite ({score})" for metric, score in scores.items() if not math.isfinite(score)]
    if broken:
        return Verdict(f"{name}'s aggregate relative {' and '.join(broken)}.", None)
    won = [metric for metric, score in scores.items() if score < 1.0]
    lost = [metric for metric in scores if metric not in won]
    parts = ", ".join(_against_naive(metric, score) for metric, score in scores.items())
    if not lost:
        text = f"{name} beat seasonal naive on both aggregate relative scores: {parts}"
    elif not won:
        text = f"{name} did not beat seasonal naive on either aggregate relative score: {parts}"
    else:
        text = f"{name} beat seasonal naive on {won[0]} but not on {lost[0]}: {parts}"
    text += f"; geometric mean over {count} datasets."
    beat = not lost
    if final == "stage2" and "stage1" in rows.index:
        earlier = {metric: float(rows.loc["stage1", metric]) for metric in scores}
        worse = [metric for metric in scores if scores[metric] > earlier[metric]]
        pairs = ", ".join(f"{metric} {scores[metric]:.3f} vs {earlier[metric]:.3f}" for metric in scores)
        if worse:
            text += f" Stage 2 is worse than stage 1 on {' and '.join(worse)} ({pairs})."
            beat = False
        else:
            text += f" Stage 2 is no worse than stage 1 on either ({pairs})."
    return Verdict(text, beat)


def finetune_verdict(selection: ModelSelectionRecord) -> Verdict:
    """Whether fine-tuning beat the start and what final-checkpoint holds, in one plain sentence, from the
    trainer's finished model-selection record."""
    metric = selection.metric or "the selection metric"
    start = _score_text(selection.start_score)
    exported = selection.exported
    holds = (f"{FINAL_CHECKPOINT} holds the starting model, unchanged" if exported == "start"
             else f"{FINAL_CHECKPOINT} holds {exported}" if exported
             else f"{FINAL_CHECKPOINT} holds the last step's weights")
    best_step = selection.best_step
    if best_step is not None and selection.best_score is not None:
        best = f", best fine-tuned {_score_text(selection.best_score)} at step {best_step}"
    else:
        best = f", best fine-tuned checkpoint at step {best_step}" if best_step is not None else ""
    if selection.beat_start:
        return Verdict(f"Fine-tuning beat the start on {metric} (start {start}{best}): {holds}.", True)
    return Verdict(f"Fine-tuning did not beat the start on {metric} (start {start}{best}): {holds}.", False)


def _score_text(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "not scored"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def finetune_comparison(improved: int, compared: int, in_domain: int, relative: pd.DataFrame | None) -> str:
    """The sentence above the zero-shot vs. fine-tuned table."""
    text = f"Fine-tuning lowered WQL on {improved} of {compared} dataset(s) compared."
    if in_domain:  # a gain on the fine-tuning data itself says little about unseen data
        text += (f" The fine-tuned model was trained on {in_domain} of them (in-domain, †): its scores there "
                 "are not zero-shot.")
    if relative is not None and {START, TUNED} <= set(relative["model"]):
        by_model = relative.set_index("model")
        start, tuned = float(by_model.loc[START, "WQL"]), float(by_model.loc[TUNED, "WQL"])
        if math.isfinite(start) and math.isfinite(tuned):
            word = "better than" if tuned < start else "worse than" if tuned > start else "the same as"
            text += (f" Aggregate relative WQL: zero-shot {start:.3f} → fine-tuned {tuned:.3f}, "
                     f"{word} the start.")
    return text


def selection_notes(selections: Mapping[str, ModelSelectionRecord]) -> list[str]:
    """How each scored model's weights were chosen (model -> its stage's record): held-out validation on the
    training corpus is a clean choice; a choice on a benchmark makes that benchmark's scores optimistic."""
    notes = []
    for model, selection in selections.items():
        metric, exported = str(selection.metric), selection.exported
        if not exported:
            continue
        held = "the starting model" if exported == "start" else exported
        if metric.startswith("validation_"):
            notes.append(f"{model}: final-checkpoint holds {held}, chosen by {metric.removeprefix('validation_')} "
                         "on held-out windows of the training corpus (not on this benchmark).")
        else:
            notes.append(f"{model}: final-checkpoint holds {held}, chosen by its benchmark {metric} during "
                         "training (benchmark_config). Where that is this benchmark, its scores here were used to "
                         "choose the model and are optimistic.")
    return notes


def data_check_verdict(report: DataCheckReport, names: Sequence[str]) -> Verdict:
    """Whether every corpus passed the data checks; `names`: how to call each corpus (one per dataset)."""
    failed = [name for name, d in zip(names, report.datasets, strict=True) if not d.ok]
    needed = (f" Series need at least {report.min_length:,} steps (min_past + prediction_length)."
              if report.min_length else "")
    if failed:
        return Verdict(f"{len(failed)} of {len(names)} corpora failed the data checks (training would stop on "
                       f"them): {', '.join(failed)}.{needed}", False)
    return Verdict(f"All {len(names)} corpora passed the data checks.{needed}", True)
