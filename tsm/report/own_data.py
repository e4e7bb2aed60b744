"""The report's first section for a run on the user's own data (data.source local): is the fine-tuned model
better than the model as it was, and than seasonal naive, on the user's own test windows?

Read from the run folder: `benchmark/*.csv` (per dataset, fev's scores of the test region), `own-data/`
(tsm evaluate-series: per-series scores, win rates and ratios with bootstrap intervals, the fan charts' series),
`data/own-split/split.json` (what the split kept and left out) and `leakage.json` (the series-level check
that no test-window value is in the training folder), and `benchmark-public/` (optional: forgetting).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tsm.report import html as h
from tsm.report import plots
from tsm.report.finetune import side_by_side
from tsm.report.runfiles import BASELINE, MODEL_ORDER, START, TUNED

OWN_FOLDER = "own-data"
SPLIT_FOLDER = Path("data") / "own-split"
PUBLIC_FOLDER = "benchmark-public"
LABELS = {START: "start (as it was)", TUNED: "fine-tuned", BASELINE: "seasonal naive"}
COLORS = {START: "#d98c2b", TUNED: "#1f6fb2", BASELINE: "#777777"}
NAMED_COLORS = ("#2a9d5c", "#8e44ad", "#c0392b", "#16a2b8", "#7f6000")  # the baselines a user named, in turn


def named_baselines(models) -> list[str]:
    """The baselines a user named (data.local.baselines): the models scored that are not the run's own, in
    the order given (the report reads their benchmark/{name}.csv like the others')."""
    return [m for m in dict.fromkeys(models) if m not in MODEL_ORDER]


def has_own_data(run_dir: Path) -> bool:
    return (run_dir / SPLIT_FOLDER / "split.json").is_file()


def _interval(low: float, high: float, digits: int = 3) -> str:
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def comparison_rows(comparisons: list[dict]) -> list[list[h.Cell]]:
    rows = []
    for c in comparisons:
        better = c["ratio_interval"][1] < 1.0
        worse = c["ratio_interval"][0] > 1.0
        tone = " better" if better else " worse" if worse else ""
        pair = f"{LABELS.get(c['model'], c['model'])} vs. {LABELS.get(c['against'], c['against'])}"
        rows.append([h.Cell(h.esc(pair)),
                     h.Cell(h.esc(c["metric"])), h.Cell(f"{c['series']:,}", "num"),
                     h.Cell(f"{c['improved']:,} ({c['improved'] / c['series']:.0%})", "num"),
                     h.Cell(f"{c['win_rate']:.3f} {_interval(*c['win_rate_interval'])}", "num"),
                     h.Cell(f"{c['ratio']:.3f} {_interval(*c['ratio_interval'])}", "num" + tone)])
    return rows


def verdict(comparisons: list[dict]) -> tuple[str, bool | None]:
    """The section's answer in one sentence, from the per-series WQL comparison of fine-tuned vs. start."""
    wql = {c["against"]: c for c in comparisons if c["metric"] == "WQL" and c["model"] == TUNED}
    if START not in wql:
        return "No per-series comparison of the fine-tuned model with its start.", None
    c = wql[START]
    low, high = c["ratio_interval"]
    text = (f"On your {c['series']:,} test series, the fine-tuned model's WQL is {c['ratio']:.3f}x the start's "
            f"(95% interval {_interval(low, high)}), better on {c['improved']:,} of them "
            f"(win rate {c['win_rate']:.2f})")
    if BASELINE in wql:
        b = wql[BASELINE]
        text += f"; against seasonal naive {b['ratio']:.3f}x {_interval(*b['ratio_interval'])}"
    for name in named_baselines(wql):
        b = wql[name]
        text += (f"; against {name} {b['ratio']:.3f}x {_interval(*b['ratio_interval'])}, better on "
                 f"{b['improved']:,}")
    good = True if high < 1.0 else False if low > 1.0 else None
    return text + ("." if good is not None else ": the interval holds 1, so no clear difference."), good


def own_fan_chart(charts: dict) -> str | None:
    """Best, median and worst change (fine-tuned / start WQL): history, truth and each model's band."""
    shown = [(which, charts[which]) for which in ("best", "median", "worst") if which in charts]
    if not shown:
        return None
    figure = plots.new_figure(12, 3.8)
    axes = figure.subplots(1, len(shown), squeeze=False).ravel()
    for ax, (which, chart) in zip(axes, shown, strict=True):
        history, truth = np.asarray(chart["history"]), np.asarray(chart["truth"])
        past, future = np.arange(-len(history), 0), np.arange(len(truth))
        ax.plot(past, history, color="black", linewidth=1.2, label="history")
        ax.plot(np.concatenate([past[-1:], future]), np.concatenate([history[-1:], truth]), color="black",
                linewidth=1.2, linestyle="--", label="truth")
        # Bands of the start and the fine-tune; the baselines' medians only (dotted, dashed), to stay legible.
        named = {name: NAMED_COLORS[i % len(NAMED_COLORS)] for i, name in enumerate(named_baselines(chart["bands"]))}
        for model, color in [*COLORS.items(), *named.items()]:
            band = chart["bands"].get(model)
            if not band or "0.5" not in band:
                continue
            if model in (START, TUNED) and "0.1" in band and "0.9" in band:
                ax.fill_between(future, band["0.1"], band["0.9"], color=color, alpha=0.2, linewidth=0)
            style = ":" if model == BASELINE else "--" if model in named else "-"
            ax.plot(future, band["0.5"], color=color, linewidth=1.6, linestyle=style,
                    label=LABELS.get(model, model))
        ax.axvline(-0.5, color="gray", linewidth=0.8, linestyle=":")
        ax.set_title(f"{which} change: {chart['item_id']} · {chart['target']}", fontsize=10)
        ax.set_xlabel("steps from the last test window's start")
    axes[0].set_ylabel("value")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5)
    return plots.to_data_uri(figure)


def _split_facts(split: dict, leakage: list | None) -> str:
    left_out = split.get("too_short") or []
    names = ", ".join(left_out[:20]) + (", ..." if len(left_out) > 20 else "")
    lines = [f"Split once before training (<code>tsm data split</code>): of {split['series']:,} series of "
             f"<code>{h.esc(split['input'])}</code>, {split['kept']:,} kept; the last "
             f"{split['test_steps_per_series']:,} steps of each ({split['num_windows']} window(s) of "
             f"{split['horizon']}) are the test region, cut off the training folder. The fine-tune's validation "
             "and checkpoint choice use the window before it (the last prediction_length steps of the training "
             "folder's series)."]
    if left_out:
        lines.append(f"{len(left_out):,} series too short for the split, left out of training and scoring: "
                     f"{h.esc(names)}.")
    if leakage is not None:
        found_test = sum(int(d.get("found_with_test_window", 0)) for d in leakage)
        found_history = sum(int(d.get("found_history", 0)) for d in leakage)
        tone = "good" if found_test == 0 else "bad"
        lines.append(f'<span class="{tone}">Leakage check (<code>tsm leakage</code>, runs of 8 values) of the '
                     f"training folder against the test windows: {found_test:,} series with test-window values "
                     f"found</span> ({found_history:,} with history, as expected: training reads the history).")
    return "".join(f"<p>{line}</p>" for line in lines)


def _read_leakage(path: Path) -> list | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text())  # tsm leakage --output: one entry per dataset


def forgetting_table(run_dir: Path) -> str:
    """The models on the public benchmark too (data.local.public_benchmark), marked as forgetting."""
    folder = run_dir / PUBLIC_FOLDER
    frames = [pd.read_csv(p).assign(model=p.stem) for p in sorted(folder.glob("*.csv"))
              if not p.stem.endswith(("-relative", "-leaderboard"))] if folder.is_dir() else []
    if not frames:
        return ""
    results = pd.concat(frames, ignore_index=True)
    table, *_ = side_by_side(results, None, named_baselines(results["model"]))
    return ("<h3>Forgetting: the public benchmark</h3><p>Not your data: what fine-tuning cost (or gained) on the "
            "public benchmark (<code>benchmark.config</code>), to see whether the model forgot what it knew."
            "</p>" + table)


def own_data_section(run_dir: Path, results: pd.DataFrame | None, relative: pd.DataFrame | None) -> h.Section:
    """Section "Your data": the answer first, then the series-level statistics, fan charts, the split."""
    title = "Your data: fine-tuned vs. as it was"
    split = json.loads((run_dir / SPLIT_FOLDER / "split.json").read_text())
    own = run_dir / OWN_FOLDER
    charts_file = own / "fan-charts.json"
    charts = json.loads(charts_file.read_text()) if charts_file.is_file() else {"charts": {}, "comparisons": []}
    body = []
    text, good = verdict(charts["comparisons"])
    body.append(h.headline(text, good))
    if results is not None and {START, TUNED} <= set(results["model"]):
        others = named_baselines(results["model"])
        table, *_ = side_by_side(results, relative, others)
        body.append("<p>Per dataset, on the test windows of your data (fev's scores; lower is better):</p>")
        body.append(table)
        named = (f" Then the baselines you named (<code>data.local.baselines</code>): {h.esc(', '.join(others))}."
                 if others else "")
        body.append('<p class="caption">Change: fine-tuned / start − 1. † in-domain: the fine-tuned model trained '
                    "on these series' history (before the test region; the leakage check below finds no "
                    "test-window value in its training folder); ? no training record (a start built here). The "
                    f"aggregate row: geometric mean over datasets of model / seasonal naive.{named}</p>")
    else:
        body.append(h.note("No per-dataset table: benchmark/start.csv or benchmark/finetune.csv is missing."))
    if charts["comparisons"]:
        header = ["Comparison", "Metric", h.Cell("Series", "num"), h.Cell("Improved", "num"),
                  h.Cell("Win rate [95%]", "num"), h.Cell("Geo. mean ratio [95%]", "num")]
        body.append("<p>Series by series (one series: one target column of one item):</p>")
        body.append(h.table(header, comparison_rows(charts["comparisons"])))
        body.append('<p class="caption">Win rate: share of series where the first model scores lower (ties '
                    "count half). Ratio: geometric mean over series of first / second (below 1: the first is "
                    "better). Intervals: 1,000 bootstrap resamples of the series.</p>")
    chart = own_fan_chart(charts.get("charts", {}))
    if chart:
        body.append(h.figure(chart, "fan charts of your series", "The series of best, median and worst change in "
                             "WQL (fine-tuned / start), last test window: median and 10–90% band of the start and "
                             "the fine-tune, the median of each baseline."))
    body.append(_split_facts(split, _read_leakage(run_dir / SPLIT_FOLDER / "leakage.json")))
    body.append(forgetting_table(run_dir))
    return h.Section("own-data", title, "\n".join(part for part in body if part))
