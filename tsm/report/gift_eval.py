"""The report's GIFT-Eval section: the leaderboard beside the published models (CRPS and MASE over seasonal naive,
geometric mean, average rank; overall, per term, per domain), each model's submission verdict (model_type,
testdata_leakage and why), how multivariate sets were forecast, and a chart of the overall figures.

Reads what `tsm evaluate --benchmark <gift-eval file>` wrote under `<run>/gift-eval/`, one job per model:
`{model}-normalised.csv` (ranked here together) and `{model}-submission/<name>/{config.json, tsm-details.json}`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tsm.report import html as h
from tsm.report import plots

GIFT_EVAL_FOLDER = "gift-eval"


def read_gift_eval(run_dir: Path) -> tuple[pd.DataFrame | None, list[dict]]:
    """The leaderboard of all the run's models together (the baseline and published rows once), and the
    submissions' config.json + tsm-details.json."""
    from tsm.eval.gift_eval.ranking import leaderboard

    folder = Path(run_dir) / GIFT_EVAL_FOLDER
    # Each job ranked one model beside the baseline: rank the run's models together from their normalised rows.
    normalised = [pd.read_csv(path) for path in sorted(folder.glob("*-normalised.csv"))]
    submissions = []
    for config_path in sorted(folder.glob("*-submission/*/config.json")):
        details_path = config_path.with_name("tsm-details.json")
        submissions.append({"config": json.loads(config_path.read_text()), "folder": str(config_path.parent),
                            "details": json.loads(details_path.read_text()) if details_path.is_file() else {}})
    if not normalised:
        return None, submissions
    rows = pd.concat(normalised, ignore_index=True).drop_duplicates(["dataset", "model", "source"])
    return leaderboard(rows), submissions


def _board_table(board: pd.DataFrame) -> str:
    rows = []
    for row in board.itertuples():
        name = h.esc(row.model) + (" <small>(published)</small>" if row.source == "published" else "")
        rows.append([name, h.number(row.CRPS), h.number(row.MASE), h.number(row.average_rank, 2),
                     str(int(row.configurations))])
    return h.table(["model", "CRPS / seasonal naive", "MASE / seasonal naive", "average rank", "configurations"],
                   rows)


def _overall_chart(overall: pd.DataFrame) -> str:
    ordered = overall.sort_values("CRPS")
    figure = plots.new_figure(7.5, 0.35 * len(ordered) + 1.2)
    axes = figure.add_subplot()
    colors = [plots.color_for(str(m), i) if s == "this run" else "#bbbbbb"
              for i, (m, s) in enumerate(zip(ordered["model"], ordered["source"], strict=True))]
    axes.barh(ordered["model"], ordered["CRPS"], color=colors)
    axes.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    axes.invert_yaxis()
    axes.set_xlabel("CRPS / seasonal naive (geometric mean; lower is better)")
    return h.figure(plots.to_data_uri(figure), "GIFT-Eval overall CRPS",
                    "Overall normalised CRPS; grey: published models (on the configurations they share with this "
                    "run's data), dashed: the seasonal naive baseline.")


def gift_eval_section(run_dir: str | Path) -> h.Section | None:
    """None when the run has no GIFT-Eval results (the switch is off)."""
    folder = Path(run_dir) / GIFT_EVAL_FOLDER
    if not folder.is_dir():
        return None
    board, submissions = read_gift_eval(Path(run_dir))
    body = []
    for submission in submissions:
        config, details = submission["config"], submission["details"]
        leakage = details.get("leakage", {})
        zero_shot = config.get("model_type") == "zero-shot"
        text = (f"{config.get('model')}: model_type {config.get('model_type')}, testdata_leakage "
                f"{config.get('testdata_leakage')}" + (" (the leakage check agrees: zero-shot)" if zero_shot else
                                                       " (not marked zero-shot: see why below)"))
        body.append(h.headline(text, good=zero_shot if config.get("testdata_leakage") != "Yes" else False))
        reasons = leakage.get("reasons") or ["no GIFT-Eval series found in the training corpora"]
        multivariate = details.get("multivariate", "joint")
        body.append(h.details(f"why, and the submission folder ({len(reasons)} finding(s))",
                              "<ul>" + "".join(f"<li>{h.esc(r)}</li>" for r in reasons) + "</ul>"
                              + f"<p>Submission: <code>{h.esc(submission['folder'])}</code> (all_results.csv, "
                              f"config.json). Multivariate sets: Chronos-2 forecast the variates "
                              f"{'jointly (one group per item)' if multivariate == 'joint' else 'one by one'}.</p>"))
    if board is None or board.empty:
        body.append(h.note("No GIFT-Eval leaderboard: the seasonal naive baseline was not scored."))
        return h.Section("gift-eval", "GIFT-Eval", "\n".join(body))
    overall = board[board["group"] == "overall"]
    body.append(_overall_chart(overall))
    body.append("<h3>Overall</h3>" + _board_table(overall))
    for kind, title in (("term", "Per term"), ("domain", "Per domain")):
        part = board[board["group"] == kind]
        tables = "".join(f"<h4>{h.esc(name)}</h4>" + _board_table(rows) for name, rows in part.groupby("name",
                                                                                                      sort=False))
        body.append(h.details(title, tables))
    if "published" not in set(board["source"]):
        body.append(h.note("No published model joined: this run's seasonal naive does not reproduce the published "
                           "figures on any configuration (not the hub's data), so only this run's models rank."))
    return h.Section("gift-eval", "GIFT-Eval", "\n".join(body))
