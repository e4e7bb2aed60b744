"""Fine-tuning on your own data through the DAG (config/finetune-own-data.yaml, workflow/rules/own_data.smk):
a generated CSV (multivariate sales and returns, a known-future promotion covariate, a past-only covariate)
converted, split once, checked, fine-tuned from a local start, scored on its test region and reported."""

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import copy_workflow
from tsm.data.split import read_corpus
from tsm.eval.own_series import compare_series

EXAMPLE = "config/finetune-own-data.yaml"
CLUSTER_ENV = {"TSM_SLURM_PARTITION": "gpuq", "TSM_SLURM_ACCOUNT": "acc", "TSM_SLURM_CPU_PARTITION": "cpuq"}


def snakemake(workdir: Path, *args: str, profile: str = "profiles/local", env: dict | None = None):
    result = subprocess.run(["snakemake", "--profile", profile, *args], cwd=workdir, capture_output=True,
                            text=True, timeout=900, env=env)
    logs = "".join(f"\n==> {p.name}\n{p.read_text()[-3000:]}" for p in sorted(workdir.glob("results/*/logs/*.log")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs
    return result


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path)


def test_the_cluster_profile_plans_the_own_data_run(workdir):
    """profiles/a100-cluster with the example on top of the cluster config: the same rules, training on SLURM;
    with public_benchmark, every model scored on the public benchmark too (forgetting)."""
    (workdir / "forgetting.yaml").write_text(yaml.safe_dump({"data": {"local": {"public_benchmark": True}}}))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TSM_SLURM_", "SLURM_"))}, **CLUSTER_ENV}
    out = snakemake(workdir, "-n", "all", "--configfiles", "config/config.yaml", "config/cluster.yaml", EXAMPLE,
                    "forgetting.yaml", profile="profiles/a100-cluster", env=env).stdout
    for rule in ("example_own_data", "convert_own_data", "split_own_data", "own_data_leakage", "check_data",
                 "init_start_model", "finetune", "evaluate", "evaluate_own_series", "report", "download_eval",
                 "evaluate_public"):
        assert re.search(rf"^rule {rule}:", out, re.M), rule
    for absent in ("synth_train", "download_train", "train_stage1", "evaluate_fev"):
        assert not re.search(rf"^rule {absent}:", out, re.M), absent
    assert "results/own/benchmark/start.csv" in out and "results/own/data/own-split/tasks.yaml" in out
    for model in ("start", "finetune", "seasonal-naive"):
        assert f"results/own/benchmark-public/{model}.csv" in out
    finetune = next(block for block in out.split("\nrule ") if block.startswith("finetune:"))
    assert "tsm launch" in finetune and "results/own/data/own-split/train" in finetune


STEPS = 100  # the example trains 300; a third already shows the margin


def fine_tune(workdir: Path, run: str, seed: int, *targets: str) -> Path:
    """The example under results/RUN, its fine-tune trained STEPS steps with `seed` from the same start."""
    example = yaml.safe_load((workdir / EXAMPLE).read_text())
    overlay = {"run": run,
               "data": {"local": {"start_model_overrides": {**example["data"]["local"]["start_model_overrides"],
                                                            "seed": 0}}},
               "finetune": {"overrides": {"seed": seed, "model_id": f"results/{run}/start-model", "max_steps": STEPS,
                                          "eval_steps": STEPS // 2, "save_steps": STEPS // 2}}}
    (workdir / f"{run}.yaml").write_text(yaml.safe_dump(overlay))
    snakemake(workdir, *(targets or ["all"]), "--configfile", EXAMPLE, f"{run}.yaml")
    return workdir / "results" / run


@pytest.mark.e2e
def test_own_csv_to_an_honest_answer_and_two_seeds_agree(workdir):
    run = fine_tune(workdir, "own-s0", 0)

    # The split: every kept series lost exactly its test region in the training folder, which holds no
    # test-window value (the series-level leakage check, run by the DAG and shown in the report).
    split = json.loads((run / "data/own-split/split.json").read_text())
    test_steps = split["test_steps_per_series"]
    assert test_steps == 20 and split["kept"] == 40 and split["too_short"] == []
    whole = {row["id"]: len(row["target"][0]) for row in read_corpus(run / "data/own").to_pylist()}
    train = read_corpus(run / "data/own-split/train").to_pylist()
    assert {row["id"]: len(row["target"][0]) for row in train} == {k: n - test_steps for k, n in whole.items()}
    assert all(len(c) == whole[row["id"]] - test_steps for row in train for c in row["feat_dynamic_real"])
    [leakage] = json.loads((run / "data/own-split/leakage.json").read_text())
    assert leakage["found_with_test_window"] == 0 and leakage["found_history"] == leakage["series"] == 80
    # The fine-tune trained and validated on that folder only; its validation window is the one before the test.
    resolved = yaml.safe_load((run / "finetune/resolved_config.yaml").read_text())
    assert resolved["training_data_paths"] == ["results/own-s0/data/own-split/train"]
    assert resolved["validation_data_paths"] is None and resolved["prediction_length"] == split["horizon"]
    # The data checks are about the user's data.
    checks = json.loads((run / "data-checks/report.json").read_text())
    assert checks["datasets"][0]["dataset"] == "results/own-s0/data/own-split/train" and checks["ok"]
    assert checks["min_length"] == 32 + 2 * 10  # min_past, a training window, the validation window

    # The report answers first: its first section compares start, fine-tuned and seasonal naive.
    report = (run / "report.html").read_text()
    first = re.search(r'<section id="([^"]+)">', report).group(1)
    assert first == "own-data"
    section = report[report.index('<section id="own-data">'):report.index("</section>")]
    table = section[section.index("<table"):section.index("</table>")]
    assert "zero-shot (start)" in table and "fine-tuned" in table and "seasonal naive" in table
    assert ">stores<" in table and "Win rate" in section and "fan charts of your series" in section
    assert "0 series with test-window values found" in section

    # Something checkable learned: the start (a random init) knows nothing of the promotions that lift sales or
    # of the 5-day cycle; the fine-tune beats it on the test windows, series by series (the whole bootstrap
    # interval of the WQL ratio below 0.9), for this seed and another from the same start.
    scores = {0: pd.read_csv(run / "own-data/series-scores.csv")}
    scores[1] = pd.read_csv(fine_tune(workdir, "own-s1", 1, "results/own-s1/own-data/series-scores.csv")
                            / "own-data/series-scores.csv")
    for seed, frame in scores.items():
        versus_start = compare_series(frame, "finetune", "start", "WQL")
        print(f"seed {seed}: fine-tuned / start WQL {versus_start.ratio:.3f} {versus_start.ratio_interval}, "
              f"{versus_start.improved} of {versus_start.series} series improved; against seasonal naive:",
              compare_series(frame, "finetune", "seasonal-naive", "WQL"))
        assert versus_start.series == 80
        assert versus_start.ratio_interval[1] < 0.9, (seed, versus_start)
        assert versus_start.improved > versus_start.series / 2, (seed, versus_start)
        # Beating a random start is the least; seasonal naive cannot know the promotions either, and loses too.
        versus_naive = compare_series(frame, "finetune", "seasonal-naive", "WQL")
        assert versus_naive.ratio_interval[1] < 0.9, (seed, versus_naive)


def test_own_data_without_its_file_or_in_pretrain_mode_is_refused_at_parse_time(workdir):
    for name, base, overlay, why in [
        ("no-file", [], {"mode": "finetune", "data": {"source": "local"}},
         "key data: 'local' is a required property (data.source: local trains and scores"),
        ("pretrain", [EXAMPLE], {"mode": "pretrain"}, "key mode: 'finetune' was expected"),
    ]:
        (workdir / f"{name}.yaml").write_text(yaml.safe_dump(overlay))
        result = subprocess.run(["snakemake", "-n", "all", "--configfile", *base, f"{name}.yaml"], cwd=workdir,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode != 0 and why in result.stdout + result.stderr, name
