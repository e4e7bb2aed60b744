"""Leaderboard statistics as the field reports them: fev's win rate and skill score with bootstrap intervals.

Both come from `fev.leaderboard` (not a second copy here): per metric, each model's error on each task
relative to the baseline, clipped as fev clips it; win rate = the share of pairwise task comparisons won
(ties count half), skill score = 1 - the geometric mean relative error; 95% intervals from resampling the
tasks. Published results (fev's summary CSVs, config/benchmarks/fev/published/) join when they hold the same
tasks: a published model that lacks one of the evaluated tasks is left out, and named as such.

tsm's own benchmark format has no fev task definitions: its results become one pseudo-task per dataset,
which ranks the models evaluated together but matches no published row.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tsm.eval.metrics import QUANTILE_LEVELS

N_RESAMPLES = 1000
SEED = 123
PUBLISHED = " (published)"  # beside a published model's name: its own run, on the hub's copy of the data
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


def _comparable(summaries: pd.DataFrame, ours: Sequence[str], metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows of the tasks our models were scored on, for our models and the published ones with all of them;
    and the names of published models left out for lacking some."""
    import fev

    indexed = summaries.assign(_row=np.arange(len(summaries), dtype=float))
    # fev's own task identity (its task-definition columns, normalised as fev normalises them): the cell
    # of each (task, model) holds the row it came from.
    cells = _quietly(fev.pivot_table, indexed, metric_column="_row")
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

    Returns (table with COLUMNS, notes): the notes name published models left out and why.
    """
    import fev

    if baseline not in set(summaries["model_name"]):
        raise ValueError(f"no results for the baseline {baseline!r}; evaluate it too (--model {baseline})")
    combined = summaries.assign(source="this evaluation")
    if reference is not None and len(reference):
        published = reference.assign(model_name=reference["model_name"].astype(str) + PUBLISHED)
        # All-empty columns (e.g. timings a file lacks) are left to concat to fill, as pandas asks.
        combined = pd.concat([f.dropna(axis=1, how="all") for f in (combined, published)], ignore_index=True)
    tables, notes = [], []
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
