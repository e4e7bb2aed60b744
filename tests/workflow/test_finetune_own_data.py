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
import torch
import yaml
from chronos import Chronos2Pipeline
from safetensors.torch import load_file
from snakemake.utils import update_config

from tests.workflow.conftest import copy_workflow
from tsm.data.split import read_corpus
from tsm.eval.own_series import compare_series
from tsm.train.lora import ADAPTER_FOLDER

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


def fine_tune(workdir: Path, run: str, seed: int, *targets: str, steps: int = STEPS, more: dict | None = None) -> Path:
    """The example under results/RUN, its fine-tune trained `steps` steps with `seed` from the same start;
    `more`: further config keys, laid over the rest key by key."""
    example = yaml.safe_load((workdir / EXAMPLE).read_text())
    overlay = {"run": run,
               "data": {"local": {"start_model_overrides": {**example["data"]["local"]["start_model_overrides"],
                                                            "seed": 0}}},
               "finetune": {"overrides": {"seed": seed, "model_id": f"results/{run}/start-model", "max_steps": steps,
                                          "eval_steps": steps // 2, "save_steps": steps // 2}}}
    update_config(overlay, more or {})
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


def previous_model(workdir: Path, folder: str, seed: int) -> str:
    """A checkpoint folder made before the run, as a user's earlier model: the example's start config,
    initialised with another seed (tsm init-model)."""
    local = yaml.safe_load((workdir / EXAMPLE).read_text())["data"]["local"]
    settings = {**local["start_model_overrides"], "seed": seed}
    subprocess.run(["tsm", "init-model", "--config", local["start_model_config"], "--output-dir", folder,
                    *(arg for key, value in settings.items() for arg in ("--set", f"{key}={value}"))],
                   cwd=workdir, check=True, capture_output=True, text=True, timeout=300)
    return folder


def test_named_baselines_are_planned_beside_the_start_and_a_missing_folder_is_refused(workdir):
    """data.local.baselines: each name gets its evaluate job (benchmark/{name}.csv, its folder an input) and an
    evaluate-series item; a folder that is not there stops the run at parse time, naming the key and the path."""
    (workdir / "previous" / "final-checkpoint").mkdir(parents=True)
    (workdir / "previous" / "final-checkpoint" / "config.json").write_text("{}")  # a plan reads no weights
    named = {"last-year": "previous/final-checkpoint", "small": "amazon/chronos-2-small"}
    (workdir / "named.yaml").write_text(yaml.safe_dump({"data": {"local": {"baselines": named}}}))
    out = snakemake(workdir, "-n", "-p", "all", "--configfile", EXAMPLE, "named.yaml").stdout
    blocks = out.split("\nrule ")
    for name, model in named.items():
        evaluate = next(b for b in blocks if f"output: results/own/benchmark/{name}.csv" in b)
        assert f"tsm evaluate --model {model} --benchmark results/own/data/own-split/tasks.yaml" in evaluate
    assert "input: results/own/data/own-split/benchmark, previous/final-checkpoint\n" in out  # hub ids: none
    series = next(b for b in blocks if b.startswith("evaluate_own_series:"))
    assert "previous/final-checkpoint\n" in series[:series.index("output:")]
    assert ("--model finetune=results/own/finetune/final-checkpoint --model last-year=previous/final-checkpoint"
            " --model small=amazon/chronos-2-small --model seasonal-naive=seasonal-naive") in series
    report = next(b for b in blocks if b.startswith("report:"))
    assert "results/own/benchmark/last-year.csv" in report and "results/own/benchmark/small.csv" in report

    (workdir / "gone.yaml").write_text(yaml.safe_dump({"data": {"local": {"baselines": {"old": "results/x/final"}}}}))
    result = subprocess.run(["snakemake", "-n", "all", "--configfile", EXAMPLE, "gone.yaml"], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Building DAG of jobs" not in out and "Traceback" not in out
    assert "data.local.baselines.old ('results/x/final'): no folder results/x/final" in out


LORA_STEPS = 20  # enough for the adapters to move; what they learn is the two-seed test's question


@pytest.mark.e2e
def test_a_lora_fine_tune_beside_a_named_baseline(workdir):
    """finetune_mode lora with a baseline the user names (a model made before the run): the DAG completes, the
    exported model (adapters merged) loads with Chronos2Pipeline, the first table and the series-by-series
    comparison list the named baseline beside start, fine-tuned and seasonal naive, and the leakage check is clean."""
    baseline = previous_model(workdir, "models/last-year", seed=1)
    run = fine_tune(workdir, "own-lora", 0, steps=LORA_STEPS, more={
        "data": {"local": {"baselines": {"last-year": baseline}}},
        "finetune": {"overrides": {"finetune_mode": "lora"}}})

    resolved = yaml.safe_load((run / "finetune/resolved_config.yaml").read_text())
    assert resolved["finetune_mode"] == "lora" and resolved["training_data_paths"] == [
        "results/own-lora/data/own-split/train"]
    final = run / "finetune/final-checkpoint"
    assert (final / ADAPTER_FOLDER / "adapter_config.json").is_file()
    pipeline = Chronos2Pipeline.from_pretrained(final)  # merged: loads without peft
    assert isinstance(pipeline, Chronos2Pipeline)
    # LoRA, not a full fine-tune: the adapted layers moved, every other weight is the start's to the bit.
    tuned, start = load_file(final / "model.safetensors"), load_file(run / "start-model/model.safetensors")
    assert tuned.keys() == start.keys()
    targets = tuple(resolved["lora"]["target_modules"])
    adapted = {k for k in tuned if k.removesuffix(".weight").endswith(targets)}
    assert adapted and all(torch.equal(tuned[k], start[k]) for k in tuned.keys() - adapted)
    assert any(not torch.equal(tuned[k], start[k]) for k in adapted)

    # The named baseline is scored like the others, on the same test windows, and reported first with them.
    assert set(pd.read_csv(run / "benchmark/last-year.csv")["dataset"]) == {"stores"}
    scores = pd.read_csv(run / "own-data/series-scores.csv")
    assert scores.groupby("model").size().to_dict() == {m: 80 for m in
                                                        ("start", "finetune", "last-year", "seasonal-naive")}
    report = (run / "report.html").read_text()
    assert re.search(r'<section id="([^"]+)">', report).group(1) == "own-data"
    section = report[report.index('<section id="own-data">'):report.index("</section>")]
    table = section[section.index("<table"):section.index("</table>")]
    for column in ("zero-shot (start)", "fine-tuned", "seasonal naive", "last-year"):
        assert f">{column}<" in table, column
    assert "fine-tuned vs. last-year" in section and "against last-year" in section
    [leakage] = json.loads((run / "data/own-split/leakage.json").read_text())
    assert leakage["found_with_test_window"] == 0
    assert "0 series with test-window values found" in section
