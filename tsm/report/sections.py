"""The report's sections, each from what the run folder holds; a missing part becomes a note."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsm.report import finetune, plots
from tsm.report import html as h
from tsm.report.regimes import regime_by_cell, regime_mark, regime_notes
from tsm.report.runfiles import BASELINE, StageRun, Validation

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


def verdict(relative: pd.DataFrame | None, results: pd.DataFrame | None) -> Verdict:
    """The plain sentence: did the final model beat seasonal naive on aggregate relative WQL?"""
    if results is None:
        return Verdict("No benchmark results, so no comparison with seasonal naive.", None)
    if relative is None:
        return Verdict("No seasonal-naive results, so no aggregate relative score.", None)
    final = next((m for m in FINAL_MODELS if m in set(relative["model"])), None)
    if final is None:
        return Verdict("No stage-2 benchmark results: cannot say whether stage 2 beat seasonal naive.", None)
    row = relative.set_index("model").loc[final]
    name = "Stage 2" if final == "stage2" else "The fine-tuned model"
    score, count = float(row["WQL"]), int(row["datasets"])
    if not math.isfinite(score):
        return Verdict(f"{name}'s aggregate relative WQL is not finite ({score}).", None)
    if score < 1.0:
        return Verdict(f"{name} beat seasonal naive on aggregate relative WQL: {score:.3f} "
                       f"({(1 - score) * 100:.1f}% lower, geometric mean over {count} datasets).", True)
    return Verdict(f"{name} did not beat seasonal naive on aggregate relative WQL: {score:.3f} "
                   f"({(score - 1) * 100:.1f}% higher, geometric mean over {count} datasets).", False)


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
        ("Started", h.esc(min(starts).strftime("%Y-%m-%d %H:%M")) if starts else "–"),
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
            body.append(h.details(f"{stage.name}: resolved_config.yaml", h.pre(stage.config_text)))
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
    return h.Section("training", "Training curves", "\n".join(body))


# ---------------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------------


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
# Data validation
# ---------------------------------------------------------------------------------------------------


def validation_section(validation: Validation | None, run_dir: Path) -> h.Section:
    title, folder = "Data validation", run_dir / "validation"
    if validation is None or (validation.report is None and validation.summary is None):
        return h.Section("validation", title, h.note(f"No data validation output ({folder}/report.json and "
                                                     "summary.txt are missing)."))
    body = []
    if validation.report is None:
        body.append(h.note(f"{folder}/report.json is missing."))
    else:
        body += validation_tables(validation.report, run_dir)
    if validation.summary is None:
        body.append(h.note(f"{folder}/summary.txt is missing."))
    else:
        body.append("<h3>summary.txt</h3>" + h.pre(validation.summary, "block"))
    return h.Section("validation", title, "\n".join(body))


def validation_tables(report: Any, run_dir: Path | None = None) -> list[str]:
    """The report's top-level figures; one row per corpus with its top-level figures (a list as its
    length: errors 1); the corpora's messages (lists of text) in full; and every nested figure in a
    collapsed corpus-by-column table. Corpora inside the run folder are named relative to it."""
    scalars, corpora = split_report(report)
    corpora = {_relative_name(name, run_dir): fields for name, fields in corpora.items()}
    parts = []
    if scalars:
        parts.append(h.table(["Figure", "Value"], [[h.esc(k), value_cell(v)] for k, v in scalars.items()]))
    if not corpora:
        parts.append(h.note("report.json holds no per-corpus figures to tabulate."))
        return parts
    # The field that names a corpus (its path) is the row's title already.
    top = {name: {k: len(v) if isinstance(v, list) else v for k, v in fields.items()
                  if (_is_scalar(v) or isinstance(v, list)) and k not in _NAME_KEYS}
           for name, fields in corpora.items()}
    columns = list(dict.fromkeys(key for fields in top.values() for key in fields))
    parts.append(h.table(
        ["Corpus"] + [h.Cell(h.esc(c), "num" if _numeric_column(top, c) else "") for c in columns],
        [[h.Cell(f"<b>{h.esc(name)}</b>")] + [value_cell(fields.get(c)) for c in columns]
         for name, fields in top.items()]))
    messages = [f"<li><b>{h.esc(name)}</b> ({h.esc(key)}): {h.esc(text)}</li>"
                for name, fields in corpora.items() for key, value in fields.items()
                if isinstance(value, list) for text in value if isinstance(text, str)]
    if messages:
        parts.append(f'<ul class="messages">{"".join(messages)}</ul>')
    nested = {name: _flatten(fields) for name, fields in corpora.items()}
    keys = [k for k in dict.fromkeys(k for fields in nested.values() for k in fields) if "." in k]
    if keys:
        parts.append(h.details(f"All {len(keys)} nested figures per corpus", h.table(
            ["Figure"] + [h.Cell(h.esc(name), "num") for name in nested],
            [[h.esc(key)] + [value_cell(fields.get(key)) for fields in nested.values()] for key in keys])))
    return parts


def _relative_name(name: str, run_dir: Path | None) -> str:
    if run_dir is None:
        return name
    for base in (run_dir, run_dir.resolve()):
        try:
            return str(Path(name).relative_to(base))
        except ValueError:
            continue
    return name


def split_report(report: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A validation report read generically: (top-level scalar figures, {corpus name: its fields}).

    The corpora are the first mapping or list at the top level (or the report itself) whose items are
    mappings; a list item is named by its name/corpus/dataset/path field."""
    if not isinstance(report, dict):
        report = {"corpora": report}
    scalars = {k: v for k, v in report.items() if _is_scalar(v)}
    candidates = [report] + [v for v in report.values() if isinstance(v, dict | list)]
    for candidate in candidates:
        items = _named_items(candidate)
        if items:
            return scalars, items
    return scalars, {}


_NAME_KEYS = ("name", "corpus", "dataset", "path")


def _named_items(candidate: Any) -> dict[str, dict]:
    if isinstance(candidate, dict):
        items = {str(k): v for k, v in candidate.items() if isinstance(v, dict)}
    elif isinstance(candidate, list):
        items = {}
        for index, item in enumerate(candidate):
            if isinstance(item, dict):
                name = next((item[k] for k in _NAME_KEYS if k in item), index)
                items[str(name)] = item
    else:
        return {}
    return items if items and any(any(_is_scalar(v) for v in f.values()) for f in items.values()) else {}


def _flatten(fields: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`length.min`); lists as their length."""
    flat: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = len(value)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _numeric_column(rows: dict[str, dict[str, Any]], column: str) -> bool:
    values = [fields[column] for fields in rows.values() if fields.get(column) is not None]
    return bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def value_cell(value: Any) -> h.Cell:
    """Numbers right-aligned in tabular figures; text left-aligned; a false flag in red."""
    if value is False:
        return h.Cell(value_text(value), "flag-bad")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return h.Cell(value_text(value), "num" if numeric else "")


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) >= 1000:
            return h.number(value) if not math.isfinite(value) else f"{value:,.0f}"
        return f"{value:.1f}" if value.is_integer() else f"{value:.4g}"
    return "–" if value is None else h.esc(value)


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
