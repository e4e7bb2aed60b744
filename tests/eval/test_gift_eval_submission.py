"""`tsm evaluate --benchmark <gift-eval file>`: the submission folder, the leakage verdict, the ranking beside the
published results, and the seasonal naive check; over synthetic sets laid out as `Salesforce/GiftEval`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import save_tiny_chronos2
from tsm.cli import main
from tsm.eval.gift_eval.metrics import CRPS, MASE
from tsm.eval.gift_eval.protocol import Configuration, GiftEvalDataset, is_gift_eval_benchmark, load_benchmark_spec
from tsm.eval.gift_eval.ranking import leaderboard, normalised_scores, read_published, seasonal_naive_check
from tsm.eval.gift_eval.submission import RESULT_COLUMNS, leakage_verdict
from tsm.eval.gift_eval.synthetic import SYNTHETIC_SETS, write_synthetic_gift_eval
from tsm.provenance import corpus_record

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "config/benchmarks/gift-eval/results"
LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gift-eval")
    write_synthetic_gift_eval(folder)
    return folder


@pytest.fixture(scope="module")
def benchmark_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "gift-eval-synthetic.yaml"
    path.write_text(yaml.safe_dump({"benchmark": "gift-eval", "configurations": list(SYNTHETIC_SETS),
                                    "multivariate": "joint"}))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_chronos2(tmp_path_factory.mktemp("model") / "tiny-chronos2", LEVELS)


@pytest.fixture(scope="module")
def evaluated(root, benchmark_file, tiny_model, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("run") / "gift-eval" / "gift.csv"  # as the workflow's <run>/gift-eval/
    status = main(["evaluate", "--benchmark", str(benchmark_file), "--datasets-root", str(root), "--model",
                   "seasonal-naive", "--model", str(tiny_model), "--output", str(output), "--batch-size", "4"])
    assert status == 0
    return output


def test_gift_eval_files_are_told_apart_from_tsm_and_fev_benchmarks(benchmark_file):
    assert is_gift_eval_benchmark(benchmark_file)
    assert is_gift_eval_benchmark(REPO / "config/benchmarks/gift-eval.yaml")
    assert not is_gift_eval_benchmark(REPO / "config/benchmarks/lite-offline.yaml")
    assert len(load_benchmark_spec(REPO / "config/benchmarks/gift-eval.yaml").configurations) == 97


def test_a_subset_names_datasets_or_datasets_at_a_term(tmp_path):
    path = tmp_path / "subset.yaml"
    path.write_text(yaml.safe_dump({"benchmark": "gift-eval", "configurations": ["ett1/H", "solar/10T/long"]}))
    chosen = [(c.name, c.term) for c in load_benchmark_spec(path).configurations]
    assert chosen == [("ett1/H", "short"), ("ett1/H", "medium"), ("ett1/H", "long"), ("solar/10T", "long")]
    path.write_text(yaml.safe_dump({"benchmark": "gift-eval", "configurations": ["ett3/H"]}))
    with pytest.raises(ValueError, match=r"configurations\[0\] = 'ett3/H' is not a GIFT-Eval configuration"):
        load_benchmark_spec(path)
    path.write_text(yaml.safe_dump({"benchmark": "gift-eval", "multivariate": "sometimes"}))
    with pytest.raises(ValueError, match="key 'multivariate'"):
        load_benchmark_spec(path)


def test_the_submission_has_the_published_header_and_one_row_per_configuration(evaluated, tiny_model):
    folder = evaluated.with_name("gift-submission") / tiny_model.name
    with (PUBLISHED / "chronos-2/all_results.csv").open() as published, (folder / "all_results.csv").open() as ours:
        published_header, rows = next(csv.reader(published)), list(csv.reader(ours))
    assert rows[0] == published_header == RESULT_COLUMNS
    assert [row[0] for row in rows[1:]] == ["m4_yearly/A/short", "hospital/M/short", "kdd_cup_2018/D/short",
                                            "ett2/D/short"]
    assert {row[1] for row in rows[1:]} == {"tiny-chronos2"}
    assert [row[-2:] for row in rows[1:]] == [["Econ/Fin", "1"], ["Healthcare", "1"], ["Nature", "1"],
                                              ["Energy", "3"]]
    config = json.loads((folder / "config.json").read_text())
    published_config = json.loads((PUBLISHED / "chronos-2/config.json").read_text())
    assert list(config) == list(published_config)
    # a hub-less folder without training provenance: its data cannot be checked
    assert (config["model_type"], config["testdata_leakage"]) == ("pretrained", "Unknown")
    details = json.loads((folder / "tsm-details.json").read_text())
    assert details["multivariate"] == "joint"
    assert {c["dataset"]: c["multivariate"] for c in details["configurations"]}["ett2/D/short"] == "joint"


def test_seasonal_naive_rows_are_the_metrics_of_its_own_forecast(evaluated, root):
    results = pd.read_csv(evaluated)
    naive = results[results["model"] == "Seasonal_Naive"].set_index("dataset")
    # m4_yearly: seasonality 1, one window of 6: the last value repeated; MASE by hand
    dataset = GiftEvalDataset(root, "m4_yearly")
    windows = dataset.test_windows("short")
    errors, scales = [], []
    for context, label in zip(windows.contexts, windows.labels, strict=True):
        errors.append(np.abs(label[0] - context[0, -1]))
        scales.append(np.mean(np.abs(np.diff(context[0]))))
    by_hand = np.mean([e / s for e, s in zip(errors, scales, strict=True)])
    # (the scale is a float32 sum there, as in gluonts: tests/eval/test_gift_eval.py holds it to gluonts' bits)
    assert naive.at["m4_yearly/A/short", MASE] == pytest.approx(by_hand, rel=1e-6)
    # a point forecast: every quantile the same, so the weighted quantile loss is ND
    assert naive.at["m4_yearly/A/short", CRPS] == pytest.approx(naive.at["m4_yearly/A/short", "eval_metrics/ND[0.5]"])


def test_the_leaderboard_is_recomputed_by_hand_for_two_configurations():
    published = read_published()
    assert set(published["model"]) >= {"Seasonal_Naive", "Chronos-2", "TiRex", "chronos_bolt_small"}
    two = ["ett1/H/long", "m4_hourly/H/short"]
    # As if this run had scored the published seasonal naive, Chronos-2 and TiRex on two configurations.
    ours = published[published["model"].isin(["Seasonal_Naive", "Chronos-2", "TiRex"]) & published["dataset"].isin(two)]
    table = normalised_scores(ours, None).set_index(["dataset", "model"])
    rows = {}
    for path in ("seasonal_naive", "chronos-2", "TiRex"):
        with (PUBLISHED / path / "all_results.csv").open() as handle:
            for row in csv.DictReader(handle):
                if row["dataset"] in two:
                    rows[(row["dataset"], row["model"])] = row
    expected = {}
    for dataset in two:
        for model in ("Chronos-2", "TiRex"):
            crps = float(rows[(dataset, model)][CRPS]) / float(rows[(dataset, "Seasonal_Naive")][CRPS])
            mase = float(rows[(dataset, model)][MASE]) / float(rows[(dataset, "Seasonal_Naive")][MASE])
            assert table.at[(dataset, model), "CRPS"] == pytest.approx(crps, rel=1e-12)
            assert table.at[(dataset, model), "MASE"] == pytest.approx(mase, rel=1e-12)
            expected[(dataset, model)] = (crps, mase)
    board = leaderboard(normalised_scores(ours, None))
    overall = board[board["group"] == "overall"].set_index("model")
    for model in ("Chronos-2", "TiRex"):
        geometric_crps = math.sqrt(expected[(two[0], model)][0] * expected[(two[1], model)][0])
        geometric_mase = math.sqrt(expected[(two[0], model)][1] * expected[(two[1], model)][1])
        assert overall.at[model, "CRPS"] == pytest.approx(geometric_crps, rel=1e-12)
        assert overall.at[model, "MASE"] == pytest.approx(geometric_mase, rel=1e-12)
        # ranked among the three (the baseline's own CRPS ratio is 1)
        ranks = [1 + sum(expected[(d, model)][0] > score for score in
                         [1.0, *(expected[(d, other)][0] for other in ("Chronos-2", "TiRex") if other != model)])
                 for d in two]
        assert overall.at[model, "average_rank"] == pytest.approx(np.mean(ranks))
    assert overall.at["Seasonal_Naive", "CRPS"] == 1.0 and overall.at["Seasonal_Naive", "MASE"] == 1.0
    terms = board[board["group"] == "term"]
    assert set(terms["name"]) == {"short", "long"} and set(terms["configurations"]) == {1}
    domains = board[board["group"] == "domain"]
    assert set(domains["name"]) == {"Energy", "Econ/Fin"}


def test_published_models_join_only_where_the_baseline_is_reproduced(evaluated):
    results = pd.read_csv(evaluated)
    published = read_published()
    check = seasonal_naive_check(results, published)
    assert len(check) == 4 and not check["agrees"].any()  # synthetic data: not the hub's
    assert set(normalised_scores(results, published)["source"]) == {"this run"}
    # the published baseline itself passes the check against itself, and then every published model joins
    baseline = published[published["model"] == "Seasonal_Naive"]
    assert seasonal_naive_check(baseline, published)["agrees"].all()
    joined = normalised_scores(baseline, published)
    assert joined.groupby("model")["dataset"].nunique().min() == 97


def test_check_seasonal_naive_exits_non_zero_where_the_figures_differ(root, benchmark_file, tmp_path, capsys):
    status = main(["evaluate", "--benchmark", str(benchmark_file), "--datasets-root", str(root),
                   "--check-seasonal-naive", "--output", str(tmp_path / "check.csv")])
    assert status == 1
    assert "0 of 4 configurations agree" in capsys.readouterr().out
    check = pd.read_csv(tmp_path / "check-seasonal-naive-check.csv")
    assert list(check["dataset"]) == ["m4_yearly/A/short", "hospital/M/short", "kdd_cup_2018/D/short",
                                      "ett2/D/short"]
    # without published results there is nothing to check against: refused before any scoring
    assert main(["evaluate", "--benchmark", str(benchmark_file), "--datasets-root", str(root), "--check-seasonal-naive",
                 "--reference-results", "--output", str(tmp_path / "none.csv")]) == 2
    assert "compares with the published seasonal naive" in capsys.readouterr().err
    assert not (tmp_path / "none.csv").exists()


def write_model_with_corpora(folder: Path, source: Path, corpora: list[Path]) -> Path:
    """A copy of `source` with a training-provenance.json listing `corpora` (as tsm train writes it)."""
    import shutil

    shutil.copytree(source, folder)
    (folder / "training-provenance.json").write_text(json.dumps({
        "stage": "stage1", "corpora": [corpus_record(path) for path in corpora], "inherited": []}))
    return folder


def test_model_type_and_leakage_follow_the_series_level_check(root, tiny_model, tmp_path):
    import datasets

    spec = load_benchmark_spec(REPO / "config/benchmarks/gift-eval-mini.yaml")
    configurations = [Configuration(name, "short") for name in SYNTHETIC_SETS]
    labels = {c: c.label(spec.properties) for c in configurations}
    rng = np.random.default_rng(5)
    clean = tmp_path / "clean"
    datasets.Dataset.from_dict({"target": [rng.normal(size=300).astype(np.float32) for _ in range(20)]}
                               ).save_to_disk(str(clean))
    kdd = GiftEvalDataset(root, "kdd_cup_2018_with_missing/D")
    whole = tmp_path / "leaky"  # one kdd series whole, renamed: its test window is in the training data
    datasets.Dataset.from_dict({"target": [kdd.targets[2][0].astype(np.float32)]}).save_to_disk(str(whole))
    history = tmp_path / "history"  # an ett2 variate cut before its test windows: fine-tuning data, no leak
    ett = GiftEvalDataset(root, "ett2/D")
    cut = ett.targets[1][2][: ett.test_start("short")]
    datasets.Dataset.from_dict({"target": [cut.astype(np.float32)]}).save_to_disk(str(history))

    zero_shot = leakage_verdict(str(write_model_with_corpora(tmp_path / "m1", tiny_model, [clean])), configurations,
                                root, labels)
    assert (zero_shot.model_type, zero_shot.testdata_leakage) == ("zero-shot", "No")
    leaky = leakage_verdict(str(write_model_with_corpora(tmp_path / "m2", tiny_model, [clean, whole])),
                            configurations, root, labels)
    assert (leaky.model_type, leaky.testdata_leakage) == ("fine-tuned", "Yes")
    assert any(r.startswith("kdd_cup_2018/D/short: 1 of 6 series") for r in leaky.reasons), leaky.reasons
    tuned = leakage_verdict(str(write_model_with_corpora(tmp_path / "m3", tiny_model, [history])), configurations,
                            root, labels)
    assert (tuned.model_type, tuned.testdata_leakage) == ("fine-tuned", "No")
    assert any(r.startswith("ett2/D/short: 1 of 18 series") and "0 with test-window values" in r
               for r in tuned.reasons), tuned.reasons
    hub = leakage_verdict("amazon/chronos-2", configurations, root, labels)
    assert (hub.model_type, hub.testdata_leakage) == ("pretrained", "Unknown")


def test_the_report_section_ranks_the_runs_models_and_says_why_not_zero_shot(evaluated, tiny_model):
    from tsm.report.gift_eval import gift_eval_section

    section = gift_eval_section(evaluated.parent.parent)
    assert section is not None and section.anchor == "gift-eval"
    assert "tiny-chronos2: model_type pretrained, testdata_leakage Unknown (not marked zero-shot" in section.body
    assert "no training-provenance.json; its training data cannot be checked" in section.body
    assert "Chronos-2 forecast the variates jointly" in section.body
    assert section.body.count("<h3>Overall</h3>") == 1 and "Seasonal_Naive" in section.body
    assert "No published model joined" in section.body and section.body.count("data:image/png;base64") == 1
    assert gift_eval_section(evaluated.parent) is None  # a run without gift-eval/: no section


def test_univariate_mode_forecasts_each_variate_alone_and_joint_mode_the_item_together(root, tiny_model):
    from chronos import Chronos2Pipeline

    from tsm.eval.gift_eval.runner import pipeline_forecaster

    pipeline = Chronos2Pipeline.from_pretrained(tiny_model)
    windows = GiftEvalDataset(root, "ett2/D").test_windows("short")
    forecast = pipeline_forecaster(pipeline)
    joint_quantiles, _ = forecast(windows.contexts, windows.horizon, 8, True, 1)
    alone_quantiles, _ = forecast(windows.contexts, windows.horizon, 8, False, 1)
    assert joint_quantiles.shape == alone_quantiles.shape == (len(windows.contexts) * 3, len(LEVELS), 30)
    # univariate: row (item 0, window 0, variate 2) is that variate forecast on its own
    alone, _ = pipeline.predict_quantiles([torch.tensor(windows.contexts[0][2], dtype=torch.float32)],
                                          prediction_length=30, quantile_levels=LEVELS)
    np.testing.assert_allclose(alone_quantiles[2], alone[0][0].T.double().numpy(), rtol=1e-5, atol=1e-6)
    # joint: the three variates as one group, as predict_quantiles takes a (variates, T) input
    together, _ = pipeline.predict_quantiles([torch.tensor(windows.contexts[0], dtype=torch.float32)],
                                             prediction_length=30, quantile_levels=LEVELS)
    np.testing.assert_allclose(joint_quantiles[:3], together[0].transpose(1, 2).double().numpy(), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(joint_quantiles, alone_quantiles)  # the group changes the forecast
