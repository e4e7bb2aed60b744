"""Zero-shot vs. fine-tuned: the report's side-by-side table for a finetune-mode run, and the trainer's own
verdict on whether fine-tuning beat the starting model.

In finetune mode the DAG scores the starting model as it was (`benchmark/start.csv`) next to the fine-tuned
one (`benchmark/finetune.csv`) and seasonal naive. The trainer writes `model-selection.json` in the stage
folder (tsm.layout.MODEL_SELECTION) saying which weights it exported and whether any fine-tuned checkpoint beat
the start on its selection metric.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsm.layout import FINAL_CHECKPOINT, MODEL_SELECTION
from tsm.report import html as h
from tsm.report.regimes import regime_by_cell, regime_mark
from tsm.report.runfiles import BASELINE, START

logger = logging.getLogger("tsm")

TUNED = "finetune"
METRICS = ("WQL", "MASE")


def read_finetune_summary(run_dir: Path) -> dict[str, Any] | None:
    """The trainer's fine-tuning summary from `<run_dir>/finetune/`, None when there is none."""
    path = run_dir / TUNED / MODEL_SELECTION
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("report: %s could not be read: %s", path, error)
        return None
    # The file exists from the first evaluation on; `beat_start` only once the run has finished.
    return {**data, "file": MODEL_SELECTION} if isinstance(data, dict) and "beat_start" in data else None


def summary_sentence(summary: dict[str, Any]) -> tuple[str, bool | None]:
    """Whether fine-tuning beat the start and what final-checkpoint holds, in one plain sentence."""
    metric = summary.get("metric") or "the selection metric"
    start = _score_text(summary.get("start_score"))
    exported = summary.get("exported")
    holds = (f"{FINAL_CHECKPOINT} holds the starting model, unchanged" if exported == "start"
             else f"{FINAL_CHECKPOINT} holds {exported}" if exported
             else f"{FINAL_CHECKPOINT} holds the last step's weights")
    best_step = summary.get("best_step")
    best = f", best fine-tuned {_score_text(summary.get('best_score'))} at step {best_step}" \
        if best_step is not None and summary.get("best_score") is not None else \
        (f", best fine-tuned checkpoint at step {best_step}" if best_step is not None else "")
    if summary.get("beat_start"):
        return f"Fine-tuning beat the start on {metric} (start {start}{best}): {holds}.", True
    return (f"Fine-tuning did not beat the start on {metric} (start {start}{best}): {holds}.", False)


def _score_text(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "not scored"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def comparison(results: pd.DataFrame, relative: pd.DataFrame | None, run_dir: Path) -> str:
    """The "Zero-shot vs. fine-tuned" part of the benchmark section (HTML); empty when the run has no
    fine-tuned model or no scores for its start."""
    summary = read_finetune_summary(run_dir)
    models = set(results["model"])
    if TUNED not in models and summary is None:
        return ""
    body = ["<h3>Zero-shot vs. fine-tuned</h3>"]
    if summary is not None:
        text, beat = summary_sentence(summary)
        tone = {True: " good", False: " bad", None: ""}[beat]
        body.append(f'<p class="headline{tone}">{h.esc(text)} <span class="sub">(the trainer\'s '
                    f"<code>{h.esc(summary['file'])}</code>)</span></p>")
    if START not in models or TUNED not in models:
        missing = "benchmark/start.csv" if START not in models else "benchmark/finetune.csv"
        body.append(h.note(f"No side-by-side table: {missing} is missing (the DAG's `evaluate` of the "
                           f"{'starting' if START not in models else 'fine-tuned'} model)."))
        return "\n".join(body)
    table, improved, compared, in_domain = side_by_side(results, relative)
    body.append(_verdict(improved, compared, in_domain, relative))
    body.append(table)
    body.append('<p class="caption">Zero-shot: the starting model (the fine-tune config\'s <code>model_id</code>) '
                "scored as it was, before fine-tuning. Change: fine-tuned / zero-shot − 1 (negative is better). "
                "The aggregate row is the geometric mean over datasets of model / seasonal naive.</p>")
    return "\n".join(body)


def side_by_side(results: pd.DataFrame, relative: pd.DataFrame | None) -> tuple[str, int, int, int]:
    """Per dataset, for WQL and MASE: zero-shot (start), fine-tuned, change and seasonal naive. Returns the
    table, the datasets where fine-tuning lowered WQL, the datasets compared, and how many of those the
    fine-tuned model was trained on (in-domain)."""
    regimes = regime_by_cell(results)
    columns = ("zero-shot (start)", "fine-tuned", "change", "seasonal naive")
    group_header = "<tr><th></th>" + "".join(
        f'<th class="group" colspan="{len(columns)}">{metric}</th>' for metric in METRICS) + "</tr>"
    header = [h.Cell("Dataset")] + [h.Cell(h.esc(c), "num" + (" first-of-group" if i == 0 else ""))
                                    for _ in METRICS for i, c in enumerate(columns)]
    scores = results.set_index(["dataset", "model"])
    rows, improved, compared, in_domain = [], 0, 0, 0
    for dataset in dict.fromkeys(results["dataset"]):
        if (dataset, START) not in scores.index or (dataset, TUNED) not in scores.index:
            continue
        compared += 1
        in_domain += regimes.get((dataset, TUNED), ("", ""))[0] == "in-domain"
        marks = {m: regime_mark(*regimes.get((dataset, m), ("", ""))) for m in (START, TUNED)}
        row = [h.Cell(h.esc(dataset))]
        for metric in METRICS:
            start, tuned = float(scores.loc[(dataset, START), metric]), float(scores.loc[(dataset, TUNED), metric])
            baseline = float(scores.loc[(dataset, BASELINE), metric]) if (dataset, BASELINE) in scores.index \
                else np.nan
            if metric == "WQL" and tuned < start:
                improved += 1
            row += [h.Cell(h.number(start) + marks[START], "num first-of-group"),
                    h.Cell(h.number(tuned) + marks[TUNED], "num"), change_cell(start, tuned),
                    h.Cell(h.number(baseline), "num")]
        rows.append(row)
    footer = []
    if relative is not None and {START, TUNED} <= set(relative["model"]):
        by_model = relative.set_index("model")
        row = [h.Cell("Aggregate relative (geo. mean vs. seasonal naive)")]
        for metric in METRICS:
            start, tuned = float(by_model.loc[START, metric]), float(by_model.loc[TUNED, metric])
            row += [h.Cell(h.number(start), "num first-of-group"), h.Cell(h.number(tuned), "num"),
                    change_cell(start, tuned), h.Cell(h.number(1.0), "num")]
        footer.append(row)
    return (h.table(header, rows, footer, group_header=group_header, css_class="finetune"), improved, compared,
            in_domain)


def change_cell(start: float, tuned: float) -> h.Cell:
    """The relative change fine-tuned vs. start, green when lower (better), red when higher."""
    if not (math.isfinite(start) and math.isfinite(tuned)) or start == 0:
        return h.Cell("–", "num")
    change = tuned / start - 1.0
    text = f"{change * 100:+.1f}%"
    shown = round(change * 100, 1)
    return h.Cell(h.esc(text), "num" + (" better" if shown < 0 else " worse" if shown > 0 else ""))


def _verdict(improved: int, compared: int, in_domain: int, relative: pd.DataFrame | None) -> str:
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
    return f"<p>{h.esc(text)}</p>"
