"""The report on a run over the user's own data: its first section answers "better than the start?"."""

import json
import re

import pandas as pd

from tsm.eval.own_series import compare_series
from tsm.report import plots
from tsm.report.own_data import named_baselines, own_data_section, verdict
from tsm.report.runfiles import read_benchmark_results
from tsm.report.verdicts import relative_or_none


def series_scores(ratio: float, baselines: dict[str, float] | None = None) -> pd.DataFrame:
    """20 series: the fine-tuned model's WQL is `ratio` x the start's on each, seasonal naive's 1.2x, each named
    baseline's (`baselines`: {name: factor}) factor x the start's."""
    rows = []
    models = (("start", 1.0), ("finetune", ratio), ("seasonal-naive", 1.2), *(baselines or {}).items())
    for i in range(20):
        start = 0.1 + 0.01 * i
        for model, value in ((model, start * factor) for model, factor in models):
            rows.append({"dataset": "stores", "item_id": f"s{i}", "target": "sales", "model": model,
                         "WQL": value, "MASE": value * 10})
    return pd.DataFrame(rows)


def own_run(tmp_path, ratio: float, baselines: dict[str, float] | None = None):
    """A run folder as the DAG leaves it; `baselines`: {name: WQL factor x the start's} named by the user."""
    baselines = baselines or {}
    run = tmp_path / "own"
    split = run / "data" / "own-split"
    split.mkdir(parents=True)
    (split / "split.json").write_text(json.dumps({
        "input": "results/own/data/own", "dataset": "stores", "horizon": 10, "num_windows": 2, "min_past": 32,
        "seasonality": 5, "series": 21, "kept": 20, "test_steps_per_series": 20, "train_values": 3600,
        "too_short": ["tiny-store"]}))
    (split / "leakage.json").write_text(json.dumps([{"dataset": "stores", "series": 20, "found": 20,
                                                     "found_with_test_window": 0, "found_history": 20}]))
    scores = series_scores(ratio, baselines)
    comparisons = [vars(compare_series(scores, "finetune", other, metric))
                   for other in ("start", *baselines, "seasonal-naive") for metric in ("WQL", "MASE")]
    window = {"dataset": "stores", "item_id": "s1", "target": "sales", "history": [1.0, 2.0, 3.0],
              "truth": [2.0, 3.0], "bands": {m: {"0.1": [1.0, 2.0], "0.5": [2.0, 3.0], "0.9": [3.0, 4.0]}
                                             for m in ("start", "finetune", *baselines, "seasonal-naive")}}
    (run / "own-data").mkdir()
    (run / "own-data" / "fan-charts.json").write_text(json.dumps(
        {"charts": {"best": window, "median": window, "worst": window}, "comparisons": comparisons}))
    (run / "benchmark").mkdir()
    for model, wql in (("start", 0.2), ("finetune", 0.2 * ratio), ("seasonal-naive", 0.24),
                       *((name, 0.2 * factor) for name, factor in baselines.items())):
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


def test_the_baselines_a_user_named_join_the_table_and_the_series_comparison(tmp_path):
    """data.local.baselines: each named model's benchmark/{name}.csv is a column of the first table (after
    seasonal naive, its aggregate too), a row of the series-by-series table and a clause of the verdict."""
    run = own_run(tmp_path, ratio=0.5, baselines={"last-year": 0.8, "small": 0.25})
    (run / "benchmark-public").mkdir()  # data.local.public_benchmark: every model on the public benchmark too
    for model in ("start", "finetune", "last-year", "seasonal-naive"):
        (run / "benchmark-public" / f"{model}.csv").write_text((run / "benchmark" / f"{model}.csv").read_text())
    results = read_benchmark_results(run)
    assert named_baselines(results["model"]) == ["last-year", "small"]
    with plots.plot_style():
        section = own_data_section(run, results, relative_or_none(results)).render()
    table = section[section.index("<table"):section.index("</table>")]
    header = table[:table.index("</thead>")]
    assert re.findall(r"<th[^>]*>([^<]+)</th>", header) == [
        "WQL", "MASE", "Dataset", *(["zero-shot (start)", "fine-tuned", "change", "seasonal naive", "last-year",
                                     "small"] * 2)]
    stores = table[table.index(">stores<"):]
    stores = stores[:stores.index("</tr>")]
    # WQL then MASE: start, fine-tuned, change, seasonal naive, then each baseline's own score
    assert re.findall(r">([0-9.]+)<", stores) == [
        "0.2000", "0.1000", "0.2400", "0.1600", "0.0500", "2.0000", "1.0000", "2.4000", "1.6000", "0.5000"]
    aggregate = table[table.index("Aggregate relative"):]
    assert re.findall(r">([0-9.]+)<", aggregate[:aggregate.index("</tr>")])[3:5] == ["0.6667", "0.2083"]
    assert "data.local.baselines</code>): last-year, small" in section
    forgetting = section[section.index("Forgetting"):]
    assert ">last-year<" in forgetting and ">small<" not in forgetting  # the baselines scored there, as named
    # series by series: fine-tuned vs. each named baseline, with win rate and interval
    assert "fine-tuned vs. last-year" in section and "fine-tuned vs. small" in section
    text, good = verdict(json.loads((run / "own-data" / "fan-charts.json").read_text())["comparisons"])
    assert good is True and "against last-year 0.625x [0.625, 0.625], better on 20" in text
    assert "against small 2.000x [2.000, 2.000], better on 0" in text
