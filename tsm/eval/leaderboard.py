"""Leaderboard statistics as the field reports them: fev's win rate and skill score with bootstrap intervals.

Both come from `fev.leaderboard` (not a second copy here): per metric, each model's error on each task
relative to the baseline, clipped as fev clips it; win rate = the share of pairwise task comparisons won
(ties count half), skill score = 1 - the geometric mean relative error; 95% intervals from resampling the
tasks. Published results (fev's summary CSVs, config/benchmarks/fev/published/) join when they hold the same
tasks: a published model that lacks one of the evaluated tasks is left out, and named as such. They join a task
only where this run's seasonal naive reproduces the published seasonal naive there (`published_joins`): a
published model ran on the hub's copy of the data, and where the baseline's scores differ the data differ, so
ranking beside it would compare forecasts of different series. Such a task leaves the ranking, named with both
figures. fev's dataset fingerprints cannot decide it: they differ between copies even where the values agree.

tsm's own benchmark format has no fev task definitions: its results become one pseudo-task per dataset,
which ranks the models evaluated together but matches no published row.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tsm.eval.metrics import QUANTILE_LEVELS

N_RESAMPLES = 1000
SEED = 123
PUBLISHED = " (published)"  # beside a published model's name: its own run, on the hub's copy of the data
PUBLISHED_BASELINE = "seasonal_naive"  # fev's name for seasonal naive in its published results
BASELINE_TOLERANCE = 1e-3  # relative; where the data agree, fev's seasonal naive reproduces to <= 2.4e-4
THIS_RUN = "this evaluation"  # the `source` of this run's rows
COLUMNS = ["metric", "model", "win_rate", "win_rate_lower", "win_rate_upper", "skill_score", "skill_score_lower",
           "skill_score_upper", "tasks", "training_corpus_overlap", "source"]


def summaries_from_results(results: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """fev-style summaries of tsm-format results (dataset, model, metric columns, regime): one task per dataset."""
    import fev

    metrics = [c for c in ("MASE", "WQL") if c in results]
    regime = results["regime"] if "regime" in results else pd.Series("", index=results.index)
    return pd.DataFrame({
        "model_name": results["model"], "dataset_path": str(benchmark), "dataset_config": results["dataset"],
        "task_name": results["dataset"], "test_error": results[metrics[0]],
        **{m: results[m] for m in metrics},
        "trained_on_this_dataset": regime.eq("in-domain"), "fev_version": fev.__version__,
        "quantile_levels": str(list(QUANTILE_LEVELS)),
        "training_time_s": np.nan, "inference_time_s": np.nan,
    })


def read_reference(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Published summaries (fev's CSV or JSON); a missing or unreadable file is a clear error."""
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"reference results {path} do not exist (fev summary CSVs: "
                                    "config/benchmarks/fev/published/)")
        try:
            frame = pd.read_json(path, orient="records") if path.suffix == ".json" else pd.read_csv(path)
        except ValueError as error:
            raise ValueError(f"{path}: not a fev summary file ({error})") from None
        missing = {"model_name", "test_error"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: not a fev summary file: no column(s) {sorted(missing)}")
        frames.append(frame.assign(source=str(path)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _quietly(function, *args, **kwargs):
    """fev warns of summary columns older files lack (filled with None) and prints dropped tasks."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message="Columns .* are missing from summaries")
        return function(*args, **kwargs)


@dataclass(frozen=True)
class PublishedJoin:
    """Whether published results may join one task: only where this run's baseline reproduces the published one."""

    task: str
    joins: bool
    reason: str  # why not, with the figures; empty when it joins
    ours: dict[str, float] = field(default_factory=dict)  # this run's baseline, per metric
    published: dict[str, float] = field(default_factory=dict)  # the published baseline, per metric

    def note(self, whole_task: bool = False) -> str:
        """One line for the leaderboard: `whole_task` when the task left the ranking, not only its published rows."""
        what = "task left out of the ranking" if whole_task else "published results left out"
        return f"{self.task}: {what}: {self.reason}"


def _with_published(summaries: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    """This run's summaries and the published ones in one frame, published names marked, `source` set."""
    combined = summaries.assign(source=THIS_RUN).reset_index(drop=True)
    if reference is None or not len(reference):
        return combined
    published = reference.assign(model_name=reference["model_name"].astype(str) + PUBLISHED)
    # All-empty columns (e.g. timings a file lacks) are left to concat to fill, as pandas asks.
    return pd.concat([f.dropna(axis=1, how="all") for f in (combined, published)], ignore_index=True)


def _task_cells(combined: pd.DataFrame) -> pd.DataFrame:
    """One row per task as fev identifies it (its task-definition columns, normalised as fev normalises them),
    one column per model; each cell holds the row of `combined` it came from (NaN: no result)."""
    import fev

    indexed = combined.assign(_row=np.arange(len(combined), dtype=float))
    return _quietly(fev.pivot_table, indexed, metric_column="_row")


def _figures(row: pd.Series, metrics: Sequence[str]) -> dict[str, float]:
    return {m: float(row[m]) for m in metrics if m in row and pd.notna(row[m])}


def _shown(figures: dict[str, float]) -> str:
    return ", ".join(f"{metric} {value:.4g}" for metric, value in figures.items())


def published_joins(summaries: pd.DataFrame, reference: pd.DataFrame | None, baseline: str,
                    metrics: Sequence[str], published_baseline: str = PUBLISHED_BASELINE,
                    tolerance: float = BASELINE_TOLERANCE) -> list[PublishedJoin]:
    """For each task holding both this run's results and published ones: do the published results join it?

    They do where this run's `baseline` reproduces the published `published_baseline` on every metric of
    `metrics` both report (relative difference <= `tolerance`); not where they differ (the data differ), nor
    where either side has no baseline on the task (nothing to check the data with).
    """
    combined = _with_published(summaries, reference)
    return [join for join, _ in _decide(combined, baseline, metrics, published_baseline, tolerance)]


def _decide(combined: pd.DataFrame, baseline: str, metrics: Sequence[str], published_baseline: str = PUBLISHED_BASELINE,
            tolerance: float = BASELINE_TOLERANCE) -> list[tuple[PublishedJoin, list[int]]]:
    """published_joins on the combined frame, each decision with the rows of `combined` its task holds."""
    if combined["source"].eq(THIS_RUN).all():
        return []
    cells = _task_cells(combined)
    this_run = set(combined.loc[combined["source"].eq(THIS_RUN), "model_name"])
    ours_columns = [m for m in cells.columns if m in this_run]
    published_columns = [m for m in cells.columns if m not in this_run]
    theirs = published_baseline + PUBLISHED
    decisions = []
    for _, task in cells.iterrows():
        rows = task.dropna().astype(int).tolist()
        if task[ours_columns].isna().all() or task[published_columns].isna().all():
            continue  # not a task both sides hold: nothing joins it
        name = str(combined.iloc[rows[0]]["task_name"])
        if pd.isna(task.get(baseline)):
            decisions.append((PublishedJoin(name, False, f"this run has no {baseline} on it to check that the "
                                                        "data are the published ones"), rows))
            continue
        ours = _figures(combined.iloc[int(task[baseline])], metrics)
        if pd.isna(task.get(theirs)):
            decisions.append((PublishedJoin(name, False, f"the published results have no {published_baseline} on "
                                                        "it to check that the data are the same", ours), rows))
            continue
        published = _figures(combined.iloc[int(task[theirs])], metrics)
        shared = [m for m in ours if m in published]
        if not shared:
            decisions.append((PublishedJoin(name, False, f"{baseline} and the published {published_baseline} share "
                                                        "no metric to check that the data are the same", ours,
                                           published), rows))
            continue
        ours, published = {m: ours[m] for m in shared}, {m: published[m] for m in shared}
        differ = [m for m in shared if not math.isclose(ours[m], published[m], rel_tol=tolerance, abs_tol=0.0)]
        reason = "" if not differ else (
            f"this run's {baseline} scores {_shown(ours)}, the published {published_baseline} {_shown(published)}, "
            f"a relative difference above {tolerance:g}; the data are not the ones the published models ran on")
        decisions.append((PublishedJoin(name, not differ, reason, ours, published), rows))
    return decisions


def _comparable(summaries: pd.DataFrame, ours: Sequence[str], metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows of the tasks our models were scored on, for our models and the published ones with all of them;
    and the names of published models left out for lacking some."""
    cells = _task_cells(summaries)
    cells = cells.loc[cells[list(ours)].notna().all(axis=1)]
    others = [m for m in cells.columns if m not in ours]
    complete = [m for m in others if cells[m].notna().all()]
    partial = [m for m in others if cells[m].notna().any() and m not in complete]  # none at all: another benchmark
    rows = cells[list(ours) + complete].to_numpy().ravel().astype(int)
    chosen = summaries.iloc[np.sort(rows)]
    return chosen[chosen[metric].notna()], sorted(partial)


def leaderboard(summaries: pd.DataFrame, ours: Sequence[str], baseline: str, metrics: Sequence[str],
                reference: pd.DataFrame | None = None, n_resamples: int = N_RESAMPLES,
                seed: int = SEED, leakage_imputation_model: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Win rate and skill score (with 95% bootstrap intervals) per metric over the tasks `ours` were scored on.

    `leakage_imputation_model`: fev's leakage handling; a model's score on a task it was trained on
    (`trained_on_this_dataset`, set by tsm's regime and series checks) is replaced by this model's.

    Published results join only the tasks where this run's baseline reproduces the published one
    (`published_joins`); a task where it does not leaves the ranking altogether (published models need every
    ranked task to stay in it), and a note names it with both figures.

    Returns (table with COLUMNS, notes): the notes name tasks and published models left out and why.
    """
    import fev

    if baseline not in set(summaries["model_name"]):
        raise ValueError(f"no results for the baseline {baseline!r}; evaluate it too (--model {baseline})")
    combined = _with_published(summaries, reference)
    decisions = _decide(combined, baseline, metrics)
    left_out = [(join, rows) for join, rows in decisions if not join.joins]
    # Where published results join some tasks, a task they leave goes with them: a published model must have
    # every ranked task to stay ranked. Where they join none, this run's models still rank on all of theirs.
    whole_tasks = any(join.joins for join, _ in decisions)
    dropped = [row for _, rows in left_out for row in rows if whole_tasks or combined.at[row, "source"] != THIS_RUN]
    combined = combined.drop(index=dropped).reset_index(drop=True)
    tables, notes = [], [join.note(whole_task=whole_tasks) for join, _ in left_out]
    for metric in metrics:
        if metric not in combined:
            continue
        chosen, left_out = _comparable(combined, ours, metric)
        if left_out:
            notes.append(f"{metric}: published results of {', '.join(left_out)} lack some of these tasks; left out")
        if chosen["model_name"].nunique() < 2:
            notes.append(f"{metric}: only {baseline} has results on these tasks; nothing to rank")
            continue
        board = _quietly(fev.leaderboard, chosen, metric_column=metric, baseline_model=baseline,
                         n_resamples=n_resamples, seed=seed, leakage_imputation_model=leakage_imputation_model)
        tasks = chosen.groupby("model_name").size()
        source = chosen.groupby("model_name")["source"].first()
        tables.append(pd.DataFrame({
            "metric": metric, "model": board.index, **{c: board[c].to_numpy() for c in COLUMNS[2:8]},
            "tasks": tasks.loc[board.index].to_numpy(),
            "training_corpus_overlap": board["training_corpus_overlap"].to_numpy(),
            "source": source.loc[board.index].to_numpy()}))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    return table, notes


def format_leaderboard(table: pd.DataFrame) -> str:
    """Plain text: per metric, models by win rate, with the intervals."""
    lines = []
    for metric, group in table.groupby("metric", sort=False):
        lines.append(f"{metric} (vs. the baseline; 95% bootstrap intervals over {int(group['tasks'].max())} tasks):")
        width = max(len(str(m)) for m in group["model"])
        for row in group.itertuples():
            overlap = row.training_corpus_overlap
            trained = f"  trained on {overlap:.0%} of the tasks" if overlap else ""
            lines.append(f"  {row.model:<{width}}  win rate {row.win_rate:.3f} [{row.win_rate_lower:.3f}, "
                         f"{row.win_rate_upper:.3f}]  skill score {row.skill_score:+.3f} "
                         f"[{row.skill_score_lower:+.3f}, {row.skill_score_upper:+.3f}]{trained}")
    return "\n".join(lines)
