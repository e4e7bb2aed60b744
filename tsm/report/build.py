"""`build_report`: one self-contained HTML file from a run folder (see tsm/report/__init__.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from tsm.atomic import write_text
from tsm.layout import FINAL_CHECKPOINT
from tsm.report import datachecks, own_data, plots, sections, verdicts
from tsm.report import html as h
from tsm.report.gift_eval import gift_eval_section
from tsm.report.runfiles import (
    STAGES,
    StageRun,
    read_benchmark_results,
    read_data_checks,
    read_fev_summaries,
    read_finetune_selection,
    read_model_selections,
    read_rule_times,
    read_stages,
)

logger = logging.getLogger("tsm")
REPO = Path(__file__).resolve().parents[2]
DEFAULT_BENCHMARK = "config/benchmarks/lite-offline.yaml"
T = TypeVar("T")


def build_report(
    run_dir: str | Path,
    output: str | Path,
    benchmark: str | Path | None = None,
    datasets_root: str | Path | None = None,
    series_per_dataset: int = 3,
    reference_results: Sequence[str | Path] = (),
) -> Path:
    """Write the run's report to `output` and return its path.

    benchmark: the benchmark YAML whose windows the fan charts show (default lite-offline);
    datasets_root: where its datasets are (default `<run_dir>/data/benchmarks`);
    reference_results: published fev summary CSVs for the leaderboard of the run's fev tasks."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist (expected e.g. results/test)")
    if series_per_dataset < 1:
        raise ValueError(f"series_per_dataset must be >= 1, got {series_per_dataset}")
    benchmark_path = resolve_benchmark(benchmark)
    root = Path(datasets_root) if datasets_root is not None else run_dir / "data" / "benchmarks"

    notes: list[str] = []  # problems reading a part: shown in the summary, never raised
    stages = _read(lambda: read_stages(run_dir), [], "training stages", notes)
    results = _read(lambda: read_benchmark_results(run_dir), None, "benchmark results", notes)
    relative = _read(lambda: verdicts.relative_or_none(results), None, "relative scores", notes)
    fev_summaries = _read(lambda: read_fev_summaries(run_dir), None, "fev summaries", notes)
    checks = _read(lambda: read_data_checks(run_dir), None, "data checks", notes)
    rule_times = _read(lambda: read_rule_times(run_dir), None, "Snakemake benchmark files", notes)
    selections = _read(lambda: read_model_selections(run_dir, STAGES), {}, "model-selection records", notes)
    tuned = _read(lambda: read_finetune_selection(run_dir), None, "fine-tuning summary", notes)
    verdict = verdicts.benchmark_verdict(relative, results)
    tuning = verdicts.finetune_verdict(tuned) if tuned is not None else None
    more = [tuning] if tuning is not None else []  # further headlines in the summary
    scored = list(dict.fromkeys(results["model"])) if results is not None else []
    chosen = verdicts.selection_notes({model: selections[model] for model in scored if model in selections})

    name = run_dir.resolve().name
    with plots.plot_style():
        # A run on the user's own data answers its question first (tsm.report.own_data).
        first = ([_section("own-data", "Your data", lambda: own_data.own_data_section(run_dir, results, relative))]
                 if own_data.has_own_data(run_dir) else [])
        rendered = [
            *first,
            _section("summary", "Run summary",
                     lambda: sections.summary_section(name, stages, rule_times, verdict, notes, more)),
            _section("training", "Training curves", lambda: sections.training_section(stages)),
            _section("benchmark", "Benchmark",
                     lambda: sections.benchmark_section(results, relative, verdict, run_dir, chosen, tuning)),
            _section("leaderboard", "Leaderboard", lambda: sections.leaderboard_section(
                results, fev_summaries, [resolve_benchmark(p) for p in reference_results])),
            *_optional_section("gift-eval", "GIFT-Eval", lambda: gift_eval_section(run_dir)),
            _section("forecasts", "Forecasts",
                     lambda: forecasts_section(stages, benchmark_path, root, series_per_dataset)),
            _section("data-checks", "Data checks", lambda: datachecks.data_checks_section(checks, run_dir)),
            _section("runtimes", "Rule run times", lambda: sections.runtimes_section(rule_times, run_dir)),
        ]

    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    document = h.page(
        title=f"Chronos-2 run report: {name}",
        subtitle=f"Run folder <code>{h.esc(run_dir)}</code> · report written {written}",
        sections=rendered,
        footer=f"Written by <code>tsm report</code> on {written}. Self-contained: styles and images are inline.",
    )
    # Never leave a half-written report where Snakemake expects a finished one.
    return write_text(output, document)


def resolve_benchmark(benchmark: str | Path | None) -> Path:
    """The given path; a relative one not found from here is looked up in the repository too (the DAG
    and the tests run from different folders)."""
    path = Path(benchmark if benchmark is not None else DEFAULT_BENCHMARK)
    if not path.exists() and not path.is_absolute() and (REPO / path).exists():
        return REPO / path
    return path


def _read(reader: Callable[[], T], fallback: T, what: str, notes: list[str]) -> T:
    try:
        return reader()
    except Exception as error:  # a corrupt file costs its section, not the report
        logger.warning("report: could not read the %s", what, exc_info=True)
        notes.append(f"Could not read the {what}: {error}")
        return fallback


def _section(anchor: str, title: str, build: Callable[[], h.Section]) -> h.Section:
    try:
        return build()
    except Exception as error:  # as above: one broken section must not cost the others
        logger.warning("report: the %s section failed", title, exc_info=True)
        return h.Section(anchor, title, h.note(f"This section could not be built: {type(error).__name__}: {error}"))


def _optional_section(anchor: str, title: str, build: Callable[[], h.Section | None]) -> list[h.Section]:
    """A section only where the run has its part (None from `build`: left out)."""
    section = _section(anchor, title, lambda: build() or h.Section(anchor, title, ""))
    return [section] if section.body else []


# ---------------------------------------------------------------------------------------------------
# Forecasts
# ---------------------------------------------------------------------------------------------------


def forecast_stage(stages: Sequence[StageRun]) -> StageRun | None:
    """The stage whose final checkpoint draws the fan charts: stage 2, else fine-tune, else stage 1."""
    by_name = {stage.name: stage for stage in stages if stage.checkpoint is not None}
    return next((by_name[name] for name in ("stage2", "finetune", "stage1") if name in by_name), None)


def forecasts_section(stages: Sequence[StageRun], benchmark: Path, datasets_root: Path,
                      series_per_dataset: int) -> h.Section:
    from tsm.eval.benchmark import load_benchmark
    from tsm.report.forecasts import forecast_datasets, load_pipeline

    title = "Forecasts"
    stage = forecast_stage(stages)
    if stage is None:
        return h.Section("forecasts", title,
                         h.note(f"No final checkpoint (stage2/{FINAL_CHECKPOINT}) to forecast with."))
    from tsm.eval.fev_tasks import is_fev_benchmark

    if is_fev_benchmark(benchmark):  # own data: its fan charts are in the first section (tsm.report.own_data)
        return h.Section("forecasts", title, h.note(f"{benchmark} is a fev task file: the fan charts of its "
                                                    "series are drawn in the section on your data, if any."))
    if not benchmark.is_file():
        return h.Section("forecasts", title, h.note(f"Benchmark file {benchmark} not found: no windows to draw "
                                                    "(pass --benchmark)."))
    body = []
    if stage.name == "stage1":  # a finetune run has no stage 2 by design; a two-stage run should
        body.append(h.note("No stage-2 checkpoint: the charts use stage1's final checkpoint instead."))
    pipeline = load_pipeline(stage.checkpoint)
    drawn, notes = forecast_datasets(pipeline, load_benchmark(benchmark), datasets_root, series_per_dataset)
    body += [h.note(text) for text in notes]
    if not drawn:
        body.append(h.note(f"No benchmark dataset could be read under {datasets_root}."))
        return h.Section("forecasts", title, "\n".join(body))
    body.append(f'<p class="caption">Made with <code>{h.esc(stage.checkpoint)}</code> (eval mode) on the windows '
                f"<code>{h.esc(benchmark.name)}</code> scores: per dataset, {series_per_dataset} windows spread "
                "evenly over the dataset. Black: history and truth (dashed); blue: median forecast with the "
                "10–90% band. The model reads up to its context length of history; the charts show the last "
                "few seasons. Each panel's WQL is for that window alone.</p>")
    for result in drawn:
        dataset = result.dataset
        chart = plots.fan_chart(f"{dataset.name}  ·  horizon {dataset.prediction_length}, "
                                f"seasonality {result.seasonality}, {result.num_windows:,} windows", result.panels)
        body.append(h.figure(plots.to_data_uri(chart), f"fan chart: {dataset.name}", css_class="fan"))
    return h.Section("forecasts", title, "\n".join(body))
