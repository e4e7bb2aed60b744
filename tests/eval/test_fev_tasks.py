"""fev task files through fev: local copies of M1/M3/Tourism built offline, a multivariate task and one with a
known covariate (synthetic), scored by tsm and by fev directly on the same predictions."""

import os
import subprocess
import sys
from pathlib import Path

import datasets
import fev
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import random_walks, tiny_config, write_corpus
from tsm.data.competitions import build_competition_dataset
from tsm.eval.benchmark import BenchmarkDataset, evaluate, load_windows, score
from tsm.eval.fev_tasks import evaluate_fev, load_fev_tasks, task_series

REPO = Path(__file__).resolve().parents[2]
OFFLINE_TASKS = REPO / "config" / "benchmarks" / "fev" / "chronos-zeroshot-offline.yaml"
COMPETITION = ["monash_m1_yearly", "monash_m3_monthly", "monash_tourism_quarterly"]
HORIZON = {"monash_m1_yearly": 6, "monash_m3_monthly": 18, "monash_tourism_quarterly": 8}
SYNTHETIC = [
    {"dataset_path": "local/synthetic", "dataset_config": "synthetic_multivariate", "horizon": 12, "num_windows": 2,
     "seasonality": 24, "eval_metric": "SQL", "extra_metrics": ["MASE", "WQL"],
     "quantile_levels": [0.1, 0.5, 0.9], "target": ["load", "price"]},
    {"dataset_path": "local/synthetic", "dataset_config": "synthetic_covariate", "horizon": 12, "num_windows": 2,
     "seasonality": 24, "eval_metric": "WQL", "extra_metrics": ["MASE"],
     "quantile_levels": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "target": "target",
     "known_dynamic_columns": ["temperature"]},
]


def hourly_dataset(columns: dict[str, list[np.ndarray]], folder: Path) -> Path:
    """A `datasets` folder in fev's wide layout: id, timestamp and one list column per variable."""
    lengths = [len(values) for values in next(iter(columns.values()))]
    table = {"id": [f"item_{i:03d}" for i in range(len(lengths))],
             "timestamp": [pd.date_range("2024-01-01", periods=n, freq="h").to_numpy() for n in lengths]}
    datasets.Dataset.from_dict({**table, **{k: [v.astype(np.float32) for v in vs] for k, vs in columns.items()}}
                               ).save_to_disk(str(folder))
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("fev")
    root = base / "root"
    for name in COMPETITION:
        build_competition_dataset(name, root)
    rng = np.random.default_rng(0)
    hours = [np.arange(n) for n in (200, 260, 300, 240)]
    load = [50 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, len(t)) for t in hours]
    hourly_dataset({"load": load, "price": [0.5 * x + rng.normal(0, 1, len(x)) for x in load]},
                   root / "synthetic_multivariate")
    temperature = [20 + 5 * np.sin(2 * np.pi * t / 24 + 1) + rng.normal(0, 0.5, len(t)) for t in hours]
    hourly_dataset({"target": [3 * x + rng.normal(0, 1, len(x)) for x in temperature], "temperature": temperature},
                   root / "synthetic_covariate")
    offline = yaml.safe_load(OFFLINE_TASKS.read_text())["tasks"]
    tasks = [t for t in offline if t["dataset_config"] in COMPETITION] + SYNTHETIC
    path = base / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": tasks}))
    model = base / "model"
    corpus = write_corpus(base / "corpus", random_walks(32, 100, 300))
    from tsm.train.loop import train

    model = train(tiny_config(corpus, base / "stage1", max_steps=2, save_steps=2))
    return {"base": base, "root": root, "tasks": path, "definitions": tasks, "model": str(model)}


def fev_directly(definition: dict, mirror: Path, predictions: list, model: str) -> dict:
    """fev on its own: the task verbatim, its data from fev's mirror layout (FEV_DATASETS_PREFIX)."""
    os.environ["FEV_DATASETS_PREFIX"] = str(mirror)
    try:
        task = fev.Task(**definition)
        return task.evaluation_summary(predictions, model_name=model)
    finally:
        del os.environ["FEV_DATASETS_PREFIX"]


@pytest.mark.e2e  # Chronos-2 through fev's own predict_fev and through tsm's copy of its loop (~15-25 s)
def test_tsm_and_fev_score_the_same_predictions_alike(setup, tmp_path):
    """Every task (univariate M1/M3/Tourism, multivariate, covariate): tsm's result rows equal fev's own
    scores of the same predictions, read through fev's mirror layout (parquet) instead of tsm's folders."""
    from chronos import Chronos2Pipeline

    results, summaries = evaluate_fev(["seasonal-naive", setup["model"]], setup["tasks"], setup["root"],
                                      batch_size=64, progress=False)
    assert len(results) == 2 * len(setup["definitions"])
    mirror = tmp_path / "mirror"
    for definition in setup["definitions"]:
        config = definition["dataset_config"]
        (mirror / config).mkdir(parents=True)
        datasets.load_from_disk(str(setup["root"] / config)).to_parquet(str(mirror / config / "data.parquet"))
    pipeline = Chronos2Pipeline.from_pretrained(setup["model"])
    for definition in setup["definitions"]:
        os.environ["FEV_DATASETS_PREFIX"] = str(mirror)
        try:
            task = fev.Task(**definition)
            predictions, _ = pipeline.predict_fev(task, batch_size=64)
        finally:
            del os.environ["FEV_DATASETS_PREFIX"]
        direct = fev_directly(definition, mirror, predictions, "model")
        row = results[(results["dataset"] == definition["dataset_config"]) & (results["model"] == setup["model"])]
        metrics = [definition["eval_metric"], *definition["extra_metrics"]]
        for metric in metrics:
            assert row[metric].item() == pytest.approx(direct[metric], rel=1e-9, abs=0), (config, metric)
        summary = summaries[(summaries["task_name"] == definition["dataset_config"])
                            & (summaries["model_name"] == setup["model"])].iloc[0]
        # the task's own identity, not where tsm read it from: published summaries line up task for task
        assert summary["dataset_path"] == definition["dataset_path"]
        assert summary["dataset_config"] == definition["dataset_config"]
        assert summary["num_forecasts"] == direct["num_forecasts"]
        assert summary["dataset_fingerprint"] == direct["dataset_fingerprint"]  # the same bytes either way
    multivariate = summaries[(summaries["task_name"] == "synthetic_multivariate")].iloc[0]
    assert multivariate["num_forecasts"] == 2 * 4 * 2  # windows x items x targets
    assert set(results.columns) >= {"dataset", "model", "MASE", "WQL", "SQL", "regime", "regime_reason"}


def test_fev_and_the_numpy_path_agree_on_benchmark_ii(setup):
    """The same Chronos-2 forecasts of M1/M3/Tourism scored by tsm's numpy metrics and by fev: equal to 1e-9."""
    from chronos import Chronos2Pipeline

    pipeline = Chronos2Pipeline.from_pretrained(setup["model"])
    for fev_task in load_fev_tasks(setup["tasks"], setup["root"])[: len(COMPETITION)]:
        task = fev_task.task
        predictions, _ = pipeline.predict_fev(task, batch_size=64)
        by_fev = task.evaluation_summary(predictions, model_name="model")
        # fev orders series by id; tsm's windows follow the rows: line them up by id
        ids = datasets.load_from_disk(str(setup["root"] / fev_task.name))["id"]
        order = np.argsort(np.asarray(ids, dtype=str), kind="stable")
        quantiles = np.stack([np.stack(predictions[0]["target"][str(q)]) for q in task.quantile_levels], axis=1)
        forecasts = np.empty_like(quantiles)
        forecasts[order] = quantiles
        windows = load_windows(BenchmarkDataset(fev_task.name, HORIZON[fev_task.name], -HORIZON[fev_task.name],
                                                seasonality=task.seasonality), setup["root"])
        ours = score(windows, forecasts)
        assert ours["WQL"] == pytest.approx(by_fev["WQL"], rel=1e-9, abs=0)
        assert ours["MASE"] == pytest.approx(by_fev["MASE"], rel=1e-9, abs=0)


def test_seasonal_naive_through_fev_equals_the_numpy_benchmark(setup, tmp_path):
    results, _ = evaluate_fev(["seasonal-naive"], setup["tasks"], setup["root"], progress=False)
    benchmark = tmp_path / "bench.yaml"
    benchmark.write_text(yaml.safe_dump({"name": "b", "datasets": [
        {"name": n, "prediction_length": HORIZON[n], "seasonality": t["seasonality"]}
        for n, t in zip(COMPETITION, setup["definitions"], strict=False)]}))
    numpy_path = evaluate(["seasonal-naive"], benchmark, setup["root"], progress=False).set_index("dataset")
    for name in COMPETITION:
        row = results[results["dataset"] == name].iloc[0]
        for metric in ("WQL", "MASE"):
            assert row[metric] == pytest.approx(numpy_path.loc[name, metric], rel=1e-9, abs=0)


def test_the_series_check_sets_trained_on_this_dataset(setup, tmp_path):
    """A model trained on a corpus holding some of a task's series (renamed) is in-domain on that task, and
    fev's summary says trained_on_this_dataset, which fev.leaderboard's leakage imputation reads."""
    from tsm.train.loop import train

    fev_task = next(t for t in load_fev_tasks(setup["tasks"], setup["root"]) if t.name == "synthetic_covariate")
    series = task_series(fev_task)
    assert len(series) == 4 and all(start == len(values) - 24 for values, start in series)  # 2 windows of 12
    copies = write_corpus(tmp_path / "renamed", [values[:-24] for values, _ in series[:2]])  # histories only
    model = train(tiny_config(copies, tmp_path / "stage1", max_steps=2, save_steps=2))
    results, summaries = evaluate_fev([str(model)], setup["tasks"], setup["root"], progress=False)
    regimes = results.set_index("dataset")["regime"]
    assert regimes["synthetic_covariate"] == "in-domain" and regimes["monash_m3_monthly"] == "zero-shot"
    trained = summaries.set_index("task_name")["trained_on_this_dataset"]
    assert trained["synthetic_covariate"] and not trained["monash_m3_monthly"]
    reason = results.set_index("dataset").loc["synthetic_covariate", "regime_reason"]
    assert "2 of 4 series (50.0%)" in reason and "'renamed'" in reason
    from tsm.eval.benchmark_files import find_leakage  # `tsm leakage` on the fev task file finds the same

    found = {r.name: r for r in find_leakage(setup["tasks"], setup["root"], [copies])}
    assert found["synthetic_covariate"].found_history == {0, 1} and found["monash_m3_monthly"].found == 0

    # fev's leakage handling reads it: the in-domain task's score becomes seasonal naive's (ratio 1)
    from scipy.stats import gmean

    from tsm.eval.leaderboard import leaderboard

    naive = evaluate_fev(["seasonal-naive"], setup["tasks"], setup["root"], progress=False)[1]
    both = pd.concat([summaries, naive], ignore_index=True)
    ours = [str(model), "seasonal-naive"]
    ratios = (summaries.set_index("task_name")["WQL"] / naive.set_index("task_name")["WQL"]).clip(0.01, 100)
    plain = leaderboard(both, ours, "seasonal-naive", ["WQL"])[0].set_index("model").loc[str(model)]
    imputed = leaderboard(both, ours, "seasonal-naive", ["WQL"], leakage_imputation_model="seasonal-naive")[0]
    assert plain["skill_score"] == pytest.approx(1 - gmean(ratios), abs=1e-12)
    assert imputed.set_index("model").loc[str(model), "skill_score"] == pytest.approx(
        1 - gmean(ratios.where(ratios.index != "synthetic_covariate", 1.0)), abs=1e-12)
    assert plain["training_corpus_overlap"] == pytest.approx(1 / 5)


def test_a_bad_task_file_names_the_file_the_task_and_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tasks": [{"dataset_path": "x", "dataset_config": "y", "horizon": 4,
                                              "horizn": 5}]}))
    with pytest.raises(ValueError, match=r"bad.yaml: tasks\[0\] \(y\): not a valid fev task: .*horizn"):
        load_fev_tasks(bad, tmp_path)


@pytest.mark.e2e  # `tsm evaluate` in a process of its own, with the hub switched off
def test_missing_data_without_a_hub_says_how_to_fetch_it(setup, tmp_path):
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump({"tasks": [{**setup["definitions"][0], "dataset_config": "monash_m4_hourly"}]}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "tsm.cli", "evaluate", "--model", "seasonal-naive",
                             "--benchmark", str(missing), "--datasets-root", str(setup["root"]),
                             "--output", str(tmp_path / "out.csv")], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "monash_m4_hourly" in result.stderr and f"tsm data download --benchmark {missing}" in result.stderr


@pytest.mark.e2e  # the whole `tsm evaluate` command in a process of its own
def test_evaluate_command_writes_fev_summaries_and_a_leaderboard_beside_published_results(setup, tmp_path):
    output = tmp_path / "eval" / "scores.csv"
    reference = sorted((REPO / "config/benchmarks/fev/published").glob("chronos_zeroshot-*.csv"))
    result = subprocess.run([sys.executable, "-m", "tsm.cli", "evaluate", "--model", "seasonal-naive",
                             "--model", setup["model"], "--benchmark", str(setup["tasks"]), "--datasets-root",
                             str(setup["root"]), "--output", str(output), "--reference-results", *map(str, reference)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = pd.read_csv(output.with_name("scores-fev-summaries.csv"))
    # fev reads the file itself, beside the published ones
    board = fev.leaderboard([str(output.with_name("scores-fev-summaries.csv"))], baseline_model="seasonal-naive")
    assert set(board.index) == {"seasonal-naive", setup["model"]} and len(summaries) == 2 * 5
    ours = pd.read_csv(output.with_name("scores-leaderboard.csv"))
    # published models join on the three Benchmark II tasks they share with this file (not the synthetic ones)
    assert "note: WQL: published results of chronos_bolt_small (published)" in result.stdout
    assert "Leaderboard (fev's win rate and skill score" in result.stdout
    assert set(ours["metric"]) >= {"MASE", "WQL", "SQL"}
    assert not ours["model"].str.contains("bolt").any()  # they lack the synthetic tasks: left out, said so


def test_task_series_start_where_fev_cuts_a_timestamp_cutoff(tmp_path):
    """A task cut at a date: each series' scored region starts where fev's own past data ends."""
    stamps = [pd.date_range("2024-01-01", periods=n, freq="D").to_numpy() for n in (50, 60)]
    datasets.Dataset.from_dict({"id": ["a", "b"], "timestamp": stamps,
                                "target": [np.arange(len(s), dtype=np.float32) for s in stamps]}
                               ).save_to_disk(str(tmp_path / "root" / "daily"))
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"tasks": [
        {"dataset_path": "local/daily", "dataset_config": "daily", "horizon": 5, "initial_cutoff": "2024-02-10"}]}))
    (fev_task,) = load_fev_tasks(tmp_path / "tasks.yaml", tmp_path / "root")
    past, _ = fev_task.task.get_window(0).get_input_data()
    assert [start for _, start in task_series(fev_task)] == [len(t) for t in past["target"]] == [41, 41]


def test_tasks_without_local_data_on_an_offline_node_stop_naming_the_download(tmp_path, monkeypatch):
    """As evaluate_fev on a compute node (HF_HUB_OFFLINE=1) whose benchmark folder lacks a task's data: it stops
    before any model is loaded, naming the tasks and the command that fetches their data where there is network."""
    from tsm.eval.fev_tasks import check_sources

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task_file = tmp_path / "tasks.yaml"
    task_file.write_text(yaml.safe_dump({"tasks": [{**SYNTHETIC[1], "dataset_path": "autogluon/fev_datasets"}]}))
    tasks = load_fev_tasks(task_file, tmp_path)
    assert [t.source for t in tasks] == ["hub"]
    with pytest.raises(FileNotFoundError) as error:
        check_sources(tasks, task_file, tmp_path)
    message = str(error.value)
    assert f"fev task data not found under {tmp_path} for: synthetic_covariate" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert f"tsm data download --benchmark {task_file} --root {tmp_path}" in message
