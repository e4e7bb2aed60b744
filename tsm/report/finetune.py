"""Zero-shot vs. fine-tuned: the report's side-by-side table for a finetune-mode run, under the trainer's own
verdict on whether fine-tuning beat the starting model (decided in tsm.report.verdicts).

In finetune mode the DAG scores the starting model as it was (`benchmark/start.csv`) next to the fine-tuned
one (`benchmark/finetune.csv`) and seasonal naive. The trainer writes `model-selection.json` in the stage
folder (tsm.layout.MODEL_SELECTION) saying which weights it exported and whether any fine-tuned checkpoint beat
the start on its selection metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tsm.layout import MODEL_SELECTION
from tsm.report import html as h
from tsm.report.regimes import regime_by_cell, regime_mark
from tsm.report.runfiles import BASELINE, START, TUNED
from tsm.report.verdicts import Verdict, finetune_comparison

METRICS = ("WQL", "MASE")


def comparison(results: pd.DataFrame, relative: pd.DataFrame | None, tuning: Verdict | None) -> str:
    """The "Zero-shot vs. fine-tuned" part of the benchmark section (HTML); empty when the run has no
    fine-tuned model or no scores for its start. `tuning`: the trainer's verdict (model-selection.json)."""
    models = set(results["model"])
    if TUNED not in models and tuning is None:
        return ""
    body = ["<h3>Zero-shot vs. fine-tuned</h3>"]
    if tuning is not None:
        body.append(h.headline(tuning.text, tuning.beat, f' <span class="sub">(the trainer\'s '
                                                         f"<code>{h.esc(MODEL_SELECTION)}</code>)</span>"))
    if START not in models or TUNED not in models:
        missing = "benchmark/start.csv" if START not in models else "benchmark/finetune.csv"
        body.append(h.note(f"No side-by-side table: {missing} is missing (the DAG's `evaluate` of the "
                           f"{'starting' if START not in models else 'fine-tuned'} model)."))
        return "\n".join(body)
    table, improved, compared, in_domain = side_by_side(results, relative)
    body.append(f"<p>{h.esc(finetune_comparison(improved, compared, in_domain, relative))}</p>")
    body.append(table)
    body.append('<p class="caption">Zero-shot: the starting model (the fine-tune config\'s <code>model_id</code>) '
                "scored as it was, before fine-tuning. Change: fine-tuned / zero-shot − 1 (negative is better). "
                "The aggregate row is the geometric mean over datasets of model / seasonal naive.</p>")
    return "\n".join(body)


def side_by_side(results: pd.DataFrame, relative: pd.DataFrame | None,
                 others: Sequence[str] = ()) -> tuple[str, int, int, int]:
    """Per dataset, for WQL and MASE: zero-shot (start), fine-tuned, change, seasonal naive and then the models
    `others` (baselines a user named). Returns the table, the datasets where fine-tuning lowered WQL, the
    datasets compared, and how many of those the fine-tuned model was trained on (in-domain)."""
    regimes = regime_by_cell(results)
    columns = ("zero-shot (start)", "fine-tuned", "change", "seasonal naive", *others)
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
            row += [h.Cell(h.number(float(scores.loc[(dataset, other), metric]) if (dataset, other) in scores.index
                                    else np.nan) + regime_mark(*regimes.get((dataset, other), ("", ""))), "num")
                    for other in others]
        rows.append(row)
    footer = []
    if relative is not None and {START, TUNED} <= set(relative["model"]):
        by_model = relative.set_index("model")
        row = [h.Cell("Aggregate relative (geo. mean vs. seasonal naive)")]
        for metric in METRICS:
            start, tuned = float(by_model.loc[START, metric]), float(by_model.loc[TUNED, metric])
            row += [h.Cell(h.number(start), "num first-of-group"), h.Cell(h.number(tuned), "num"),
                    change_cell(start, tuned), h.Cell(h.number(1.0), "num")]
            row += [h.Cell(h.number(float(by_model.loc[other, metric]) if other in by_model.index else np.nan), "num")
                    for other in others]
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
