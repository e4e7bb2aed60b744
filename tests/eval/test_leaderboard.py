"""Win rate and skill score with bootstrap intervals, beside published fev results of the same tasks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import gmean

from tsm.data.competitions import build_competition_dataset
from tsm.eval.fev_tasks import evaluate_fev
from tsm.eval.leaderboard import PUBLISHED, format_leaderboard, leaderboard, read_reference, summaries_from_results

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "config" / "benchmarks" / "fev" / "published"
NAMES = ["monash_m3_yearly", "monash_m3_quarterly", "monash_m3_monthly", "monash_tourism_quarterly"]


@pytest.fixture(scope="module")
def naive(tmp_path_factory) -> pd.DataFrame:
    base = tmp_path_factory.mktemp("board")
    for name in NAMES:
        build_competition_dataset(name, base / "root")
    tasks = [t for t in yaml.safe_load((REPO / "config/benchmarks/fev/chronos-zeroshot-offline.yaml").read_text())
             ["tasks"] if t["dataset_config"] in NAMES]
    (base / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    return evaluate_fev(["seasonal-naive"], base / "tasks.yaml", base / "root", progress=False)[1]


def test_published_models_join_on_the_same_tasks_and_the_statistics_are_fevs(naive):
    reference = read_reference(sorted(RESULTS.glob("*.csv")))
    board, notes = leaderboard(naive, ["seasonal-naive"], "seasonal-naive", ["WQL", "MASE"], reference)
    wql = board[board["metric"] == "WQL"].set_index("model")
    # Benchmark II's published models have all four tasks; fev-bench's have none of them (another benchmark)
    assert set(wql.index) == {"seasonal-naive", *(m + PUBLISHED for m in
                                                  ("chronos_bolt_tiny", "chronos_bolt_small", "seasonal_naive"))}
    assert (wql["tasks"] == len(NAMES)).all() and notes == []
    # skill score = 1 - geometric mean of the clipped error ratio to the baseline, from the two files directly
    published = pd.read_csv(RESULTS / "chronos_zeroshot-results-chronos_bolt_small.csv").set_index("dataset_config")
    ours = naive.set_index("task_name")["WQL"]
    ratios = np.clip([published.loc[n, "WQL"] / ours[n] for n in NAMES], 0.01, 100)
    small = wql.loc["chronos_bolt_small" + PUBLISHED]
    assert small["skill_score"] == pytest.approx(1 - gmean(ratios), abs=1e-12)
    # win rate: the share of pairwise task comparisons won against each other model (ties half), averaged
    errors = {"ours": ours[NAMES].to_numpy()}
    for name in ("chronos_bolt_tiny", "chronos_bolt_small", "seasonal_naive"):
        frame = pd.read_csv(RESULTS / f"chronos_zeroshot-results-{name}.csv").set_index("dataset_config")
        errors[name] = frame.loc[NAMES, "WQL"].to_numpy()
    mine = errors["chronos_bolt_small"]
    expected = np.mean([np.mean((mine < other) + 0.5 * (mine == other))
                        for key, other in errors.items() if key != "chronos_bolt_small"])
    assert small["win_rate"] == pytest.approx(expected, abs=1e-12)
    assert small["win_rate_lower"] <= small["win_rate"] <= small["win_rate_upper"]
    assert small["skill_score_lower"] <= small["skill_score"] <= small["skill_score_upper"]
    assert small["skill_score_lower"] < small["skill_score_upper"]  # a real interval from the resamples
    assert wql.loc["seasonal-naive", "skill_score"] == 0.0
    text = format_leaderboard(board)
    assert "chronos_bolt_small (published)  win rate" in text and "skill score" in text


def test_a_published_model_with_some_tasks_missing_is_left_out_and_named(naive, tmp_path):
    partial = pd.read_csv(RESULTS / "chronos_zeroshot-results-chronos_bolt_tiny.csv")
    partial = partial[partial["dataset_config"] != "monash_m3_yearly"]
    partial.to_csv(tmp_path / "partial.csv", index=False)
    board, notes = leaderboard(naive, ["seasonal-naive"], "seasonal-naive", ["WQL"],
                               read_reference([tmp_path / "partial.csv"]))
    assert board.empty
    assert notes == ["WQL: published results of chronos_bolt_tiny (published) lack some of these tasks; left out",
                     "WQL: only seasonal-naive has results on these tasks; nothing to rank"]


def test_tsm_format_results_rank_the_models_evaluated_together():
    results = pd.DataFrame({"dataset": ["a", "b", "c"] * 2, "model": ["m"] * 3 + ["seasonal-naive"] * 3,
                            "MASE": [0.5, 2.0, 0.9, 1.0, 1.0, 1.0], "WQL": [0.1, 0.3, 0.1, 0.2, 0.2, 0.2],
                            "regime": ["zero-shot"] * 3 + ["n.a."] * 3})
    board, _ = leaderboard(summaries_from_results(results, "bench.yaml"), ["m", "seasonal-naive"], "seasonal-naive",
                           ["MASE"])
    row = board.set_index("model").loc["m"]
    assert row["win_rate"] == pytest.approx(2 / 3)  # wins a and c, loses b
    assert row["skill_score"] == pytest.approx(1 - gmean([0.5, 2.0, 0.9]))


def test_reference_files_that_are_not_fev_summaries_are_named(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: not a fev summary file: no column\(s\) \['model_name'"):
        read_reference([tmp_path / "x.csv"])
    with pytest.raises(FileNotFoundError, match="nope.csv do not exist"):
        read_reference([tmp_path / "nope.csv"])
