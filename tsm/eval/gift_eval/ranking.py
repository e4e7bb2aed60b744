"""GIFT-Eval's leaderboard figures beside published results, and the seasonal naive check.

Per configuration each model's CRPS (the mean weighted quantile loss) and MASE are divided by the seasonal
naive baseline's on that configuration; a group of configurations (all of them, a term, a domain) is summarised
by the geometric mean of those ratios and by the average rank (1 = best CRPS, ties share the mean rank) over
the configurations every ranked model has. This run's models are normalised by this run's seasonal naive,
published models by the published one: a published model joins a configuration only where this run's seasonal
naive reproduces the published figures (the point-forecast metrics to `rtol`), i.e. where the data are the hub's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tsm.eval.gift_eval.metrics import CRPS, MASE
from tsm.eval.gift_eval.submission import RESULT_COLUMNS

BASELINE = "Seasonal_Naive"
# The seasonal naive baseline's figures that depend only on its point forecast: the published baseline's
# intervals (its CRPS and MSIS) come from statsforecast's residual model, which tsm does not replicate.
POINT_METRICS = ["eval_metrics/MSE[0.5]", "eval_metrics/MAE[0.5]", MASE, "eval_metrics/MAPE[0.5]",
                 "eval_metrics/sMAPE[0.5]", "eval_metrics/ND[0.5]"]
DEFAULT_RTOL = 1e-3


def published_results_folder() -> Path:
    here = Path("config/benchmarks/gift-eval/results")
    return here if here.is_dir() else Path(__file__).resolve().parents[3] / "config/benchmarks/gift-eval/results"


def read_published(paths: Sequence[str | Path] | None = None) -> pd.DataFrame:
    """Published `all_results.csv` files (or folders holding one) in one table; default: tsm's copies of the
    eight models in config/benchmarks/gift-eval/results/."""
    if paths is None:
        paths = sorted(published_results_folder().glob("*/all_results.csv"))
    tables = []
    for path in paths:
        path = Path(path)
        path = path / "all_results.csv" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"published GIFT-Eval results {path} do not exist")
        table = pd.read_csv(path)
        missing = [c for c in RESULT_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: not a GIFT-Eval all_results.csv: column(s) {missing} missing")
        tables.append(table[RESULT_COLUMNS])
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=RESULT_COLUMNS)


def seasonal_naive_check(ours: pd.DataFrame, published: pd.DataFrame, rtol: float = DEFAULT_RTOL) -> pd.DataFrame:
    """Per configuration this run's seasonal naive shares with the published one: each point metric side by side,
    the largest relative difference and whether it is within `rtol`."""
    mine = ours[ours["model"] == BASELINE].set_index("dataset")
    theirs = published[published["model"] == BASELINE].drop_duplicates("dataset").set_index("dataset")
    rows = []
    for dataset in mine.index:
        if dataset not in theirs.index:
            rows.append({"dataset": dataset, "max_relative_difference": np.nan, "agrees": False,
                         "note": "no published seasonal naive for this configuration"})
            continue
        row: dict = {"dataset": dataset}
        differences = []
        for metric in POINT_METRICS:
            a, b = float(mine.at[dataset, metric]), float(theirs.at[dataset, metric])
            row[f"{metric} (tsm)"], row[f"{metric} (published)"] = a, b
            differences.append(abs(a - b) / max(abs(b), 1e-12))
        row["max_relative_difference"] = max(differences)
        row["agrees"] = bool(row["max_relative_difference"] <= rtol)
        row["note"] = "" if row["agrees"] else "differs: not the hub's data, or a protocol difference"
        rows.append(row)
    return pd.DataFrame(rows)


def normalised_scores(ours: pd.DataFrame, published: pd.DataFrame | None = None,
                      rtol: float = DEFAULT_RTOL) -> pd.DataFrame:
    """One row per (configuration, model): CRPS and MASE over the seasonal naive's (the baseline's own rows: 1),
    with `source` (this run or published), domain and term. Published models only where the baseline check
    agrees."""
    if BASELINE not in set(ours["model"]):
        raise ValueError(f"no {BASELINE} rows in this run: evaluate the baseline too (--model seasonal-naive)")
    # The baseline ranks too (1 on every configuration), as on the leaderboard.
    frames = [_normalise(ours, ours[ours["model"] == BASELINE], "this run")]
    if published is not None and len(published):
        check = seasonal_naive_check(ours, published, rtol)
        agreeing = set(check.loc[check["agrees"], "dataset"])
        joined = published[published["dataset"].isin(agreeing)]
        others = joined[(joined["model"] != BASELINE) & ~joined["model"].isin(set(ours["model"]))]
        frames.append(_normalise(others, joined[joined["model"] == BASELINE], "published"))
    table = pd.concat(frames, ignore_index=True)
    table["term"] = table["dataset"].str.rsplit("/", n=1).str[-1]
    return table


def _normalise(models: pd.DataFrame, baseline: pd.DataFrame, source: str) -> pd.DataFrame:
    base = baseline.drop_duplicates("dataset").set_index("dataset")
    kept = models[models["dataset"].isin(base.index)]
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame({
            "dataset": kept["dataset"].to_numpy(), "model": kept["model"].to_numpy(), "source": source,
            "domain": kept["domain"].to_numpy(),
            "CRPS": kept[CRPS].to_numpy(dtype=float) / base.loc[kept["dataset"], CRPS].to_numpy(dtype=float),
            "MASE": kept[MASE].to_numpy(dtype=float) / base.loc[kept["dataset"], MASE].to_numpy(dtype=float),
        })


def leaderboard(normalised: pd.DataFrame) -> pd.DataFrame:
    """Per group (overall, each term, each domain) and model: geometric means of normalised CRPS and MASE,
    average CRPS rank, and how many configurations they cover (those every model of the group has)."""
    groups = [("overall", "all", normalised)]
    groups += [("term", term, part) for term, part in normalised.groupby("term", sort=False)]
    groups += [("domain", domain, part) for domain, part in normalised.groupby("domain", sort=True)]
    rows = []
    for kind, name, part in groups:
        models = part["model"].unique()
        counts = part.groupby("dataset")["model"].nunique()
        shared = counts[counts == len(models)].index
        common = part[part["dataset"].isin(shared)].copy()
        if common.empty:
            continue
        common["rank"] = common.groupby("dataset")["CRPS"].rank(method="average")
        for (model, source), scores in common.groupby(["model", "source"], sort=False):
            with np.errstate(divide="ignore"):
                rows.append({"group": kind, "name": name, "model": model, "source": source,
                             "CRPS": float(np.exp(np.mean(np.log(scores["CRPS"])))),
                             "MASE": float(np.exp(np.mean(np.log(scores["MASE"])))),
                             "average_rank": float(scores["rank"].mean()), "configurations": len(scores)})
    board = pd.DataFrame(rows, columns=["group", "name", "model", "source", "CRPS", "MASE", "average_rank",
                                        "configurations"])
    return board.sort_values(["group", "name", "CRPS"], kind="stable", key=_group_order).reset_index(drop=True)


def _group_order(column: pd.Series) -> pd.Series:
    if column.name == "group":
        return column.map({"overall": 0, "term": 1, "domain": 2})
    if column.name == "name":
        return column.map(lambda v: {"short": "0", "medium": "1", "long": "2"}.get(v, v))
    return column


def format_leaderboard(board: pd.DataFrame) -> str:
    return board.to_string(index=False, float_format=lambda v: f"{v:.4f}")
