"""GIFT-Eval in the workflow: the switch, the download rules (GiftEval and GiftEvalPretrain), the evaluation per
model and the report section, on the tiny run of .test/config/ over a small local copy laid out as the hub's."""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import copy_workflow
from tsm.eval.gift_eval.submission import RESULT_COLUMNS
from tsm.eval.gift_eval.synthetic import SYNTHETIC_SETS, write_synthetic_gift_eval

TINY = ".test/config/config.yaml"
OVERLAY = "gift-eval-test.yaml"


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["snakemake", "--profile", "profiles/local", *args, "--configfile", TINY, OVERLAY],
                            cwd=workdir, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def write_overlay(workdir: Path, gift_eval: dict, data: dict | None = None) -> None:
    (workdir / "gift-bench.yaml").write_text(yaml.safe_dump({
        "benchmark": "gift-eval", "configurations": list(SYNTHETIC_SETS), "multivariate": "joint"}))
    overlay = {"benchmark": {"fev": None, "gift_eval": {"config": "gift-bench.yaml", **gift_eval}}}
    if data:
        overlay["data"] = data
    (workdir / OVERLAY).write_text(yaml.safe_dump(overlay))


@pytest.mark.e2e
def test_switched_on_it_plans_the_downloads_and_one_evaluation_per_model(tmp_path):
    workdir = copy_workflow(tmp_path)
    write_overlay(workdir, {"root": None}, data={"source": "gift-eval-pretrain",
                                                  "gift_eval_pretrain": {"datasets": ["buildings_900k", "kdd2022"]}})
    out = snakemake(workdir, "-n", "all").stdout
    assert "rule download_gift_eval:" in out and "rule download_gift_eval_pretrain:" in out
    assert "--gift-eval ett2/D hospital kdd_cup_2018_with_missing/D m4_yearly" in out
    assert "--gift-eval-pretrain buildings_900k kdd2022" in out
    for model in ("stage1", "stage2"):
        assert (f"--model seasonal-naive --model results/ci/{model}/final-checkpoint --benchmark gift-bench.yaml "
                f"--datasets-root results/ci/data/gift-eval --output results/ci/gift-eval/{model}.csv") in out
    # the pretraining corpora are the repo's folders, read as they are
    assert "results/ci/data/gift-eval-pretrain/buildings_900k" in out


@pytest.mark.e2e
def test_tiny_run_with_gift_eval_through_to_the_report(tmp_path):
    workdir = copy_workflow(tmp_path)
    write_synthetic_gift_eval(workdir / "gift-local")
    write_overlay(workdir, {"root": "gift-local"})
    snakemake(workdir, "all")
    run = workdir / "results" / "ci"
    for model in ("stage1", "stage2"):
        scores = pd.read_csv(run / "gift-eval" / f"{model}.csv")
        assert set(scores["model"]) == {"Seasonal_Naive", model} and len(scores) == 2 * len(SYNTHETIC_SETS)
        submission = run / "gift-eval" / f"{model}-submission" / model
        assert list(pd.read_csv(submission / "all_results.csv").columns) == RESULT_COLUMNS
        config = json.loads((submission / "config.json").read_text())
        # trained on the synthetic corpus only, every corpus on disk and none holds a GIFT-Eval series
        assert (config["model_type"], config["testdata_leakage"]) == ("zero-shot", "No")
        board = pd.read_csv(run / "gift-eval" / f"{model}-leaderboard.csv")
        assert set(board["group"]) == {"overall", "term", "domain"} and set(board["source"]) == {"this run"}
    html = (run / "report.html").read_text()
    assert 'id="gift-eval"' in html and "model_type zero-shot, testdata_leakage No" in html
    assert "the leakage check agrees: zero-shot" in html and "https://" not in html


def test_the_recipe_config_is_valid_on_top_of_the_cluster_config():
    """config/gift-eval.yaml over config/config.yaml and config/cluster.yaml, merged as Snakemake merges them,
    passes the workflow's schema: pretraining on GiftEvalPretrain's folders, all 97 configurations scored."""
    from snakemake.utils import update_config, validate

    from tests.workflow.conftest import REPO

    merged: dict = {}
    for name in ("config/config.yaml", "config/cluster.yaml", "config/gift-eval.yaml"):
        update_config(merged, yaml.safe_load((REPO / name).read_text()))
    validate(merged, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert merged["data"]["source"] == "gift-eval-pretrain" and merged["data"]["gift_eval_pretrain"]["datasets"]
    assert merged["benchmark"]["gift_eval"]["config"] == "config/benchmarks/gift-eval.yaml"
    assert merged["stage1"]["config"] == "config/training/chronos2-base.yaml" and merged["launch"]["mode"] == "slurm"
