"""The report on a run over the user's own data: its first section answers "better than the start?"."""

import json

import pandas as pd

from tsm.eval.own_series import compare_series
from tsm.report import plots
from tsm.report.own_data import own_data_section, verdict
from tsm.report.runfiles import read_benchmark_results
from tsm.report.verdicts import relative_or_none


def series_scores(ratio: float) -> pd.DataFrame:
    """20 series: the fine-tuned model's WQL is `ratio` x the start's on each, seasonal naive's 1.2x."""
    rows = []
    for i in range(20):
        start = 0.1 + 0.01 * i
        for model, value in (("start", start), ("finetune", start * ratio), ("seasonal-naive", start * 1.2)):
            rows.append({"dataset": "stores", "item_id": f"s{i}", "target": "sales", "model": model,
                         "WQL": value, "MASE": value * 10})
    return pd.DataFrame(rows)


def own_run(tmp_path, ratio: float):
    run = tmp_path / "own"
    split = run / "data" / "own-split"
    split.mkdir(parents=True)
    (split / "split.json").write_text(json.dumps({
        "input": "results/own/data/own", "dataset": "stores", "horizon": 10, "num_windows": 2, "min_past": 32,
        "seasonality": 5, "series": 21, "kept": 20, "test_steps_per_series": 20, "train_values": 3600,
        "too_short": ["tiny-store"]}))
    (split / "leakage.json").write_text(json.dumps([{"dataset": "stores", "series": 20, "found": 20,
                                                     "found_with_test_window": 0, "found_history": 20}]))
    scores = series_scores(ratio)
    comparisons = [vars(compare_series(scores, "finetune", other, metric))
                   for other in ("start", "seasonal-naive") for metric in ("WQL", "MASE")]
    window = {"dataset": "stores", "item_id": "s1", "target": "sales", "history": [1.0, 2.0, 3.0],
              "truth": [2.0, 3.0], "bands": {m: {"0.1": [1.0, 2.0], "0.5": [2.0, 3.0], "0.9": [3.0, 4.0]}
                                             for m in ("start", "finetune", "seasonal-naive")}}
    (run / "own-data").mkdir()
    (run / "own-data" / "fan-charts.json").write_text(json.dumps(
        {"charts": {"best": window, "median": window, "worst": window}, "comparisons": comparisons}))
    (run / "benchmark").mkdir()
    for model, wql in (("start", 0.2), ("finetune", 0.2 * ratio), ("seasonal-naive", 0.24)):
        pd.DataFrame([{"dataset": "stores", "model": model, "MASE": wql * 10, "WQL": wql}]).to_csv(
            run / "benchmark" / f"{model}.csv", index=False)
    # what tsm evaluate writes beside on a fev task file: never read as a model's scores
    (run / "benchmark" / "start-fev-summaries.csv").write_text("model_name,task_name\nstart,stores\n")
    return run


def test_the_first_section_compares_start_fine_tuned_and_seasonal_naive(tmp_path):
    """(build_report puts this section first: tests/workflow/test_finetune_own_data.py checks the whole page.)"""
    run = own_run(tmp_path, ratio=0.5)
    results = read_benchmark_results(run)
    assert sorted(results["model"]) == ["finetune", "seasonal-naive", "start"]  # not the fev summaries
    with plots.plot_style():
        section = own_data_section(run, results, relative_or_none(results)).render()
    table = section[section.index("<table"):section.index("</table>")]
    assert "zero-shot (start)" in table and "fine-tuned" in table and "seasonal naive" in table
    assert "-50.0%" in table  # the change, fine-tuned / start - 1
    assert "better on 20 of them" in section and "0.500x the start" in section
    assert "tiny-store" in section and "0 series with test-window values found" in section
    assert "data:image/png;base64," in section  # the fan charts


def test_the_verdict_says_so_when_the_interval_holds_one(tmp_path):
    scores = series_scores(1.0)
    scores.loc[scores.model.eq("finetune") & scores.item_id.isin(["s0", "s1"]), "WQL"] *= 0.9
    scores.loc[scores.model.eq("finetune") & scores.item_id.isin(["s2", "s3"]), "WQL"] *= 1.1
    text, good = verdict([vars(compare_series(scores, "finetune", "start"))])
    assert good is None and "no clear difference" in text
    text, good = verdict([vars(compare_series(series_scores(1.5), "finetune", "start"))])
    assert good is False and "1.500x" in text
