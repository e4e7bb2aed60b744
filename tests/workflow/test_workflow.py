"""The Snakemake DAG for real: plan, lint, a reduced end-to-end run with 2 CPU ranks, and -R train_stage2."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

TINY_BENCHMARK = {"name": "tiny", "datasets": [
    {"name": "monash_m3_yearly", "offset": -6, "prediction_length": 6, "num_rolls": 1, "freq": "Y"},
    {"name": "monash_tourism_quarterly", "offset": -8, "prediction_length": 8, "num_rolls": 1, "freq": "Q"},
]}
TINY = {
    "run": "ci",
    "benchmark": {"config": "tiny-benchmark.yaml", "offline": True},
    "data": {"synth": {"kind": "mix", "num_series": 200, "min_length": 200, "max_length": 600, "seed": 0}},
    "stage1": {"config": "config/training/chronos2-test.yaml",
               "overrides": {"max_steps": 6, "save_steps": 3, "log_steps": 3, "context_length": 128,
                             "model.d_model": 64, "model.d_ff": 128, "model.d_kv": 16}},
    "stage2": {"config": "config/training/chronos2-test.yaml", "context_length": 256,
               "overrides": {"max_steps": 4, "save_steps": 2, "log_steps": 2}},
}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["snakemake", "--profile", "profiles/local", *args], cwd=workdir,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "tiny-benchmark.yaml").write_text(yaml.safe_dump(TINY_BENCHMARK))
    return tmp_path


def test_dry_run_plans_the_whole_dag(workdir):
    out = snakemake(workdir, "-n", "all").stdout
    for rule in ("synth_train", "download_eval", "check_data", "train_stage1", "train_stage2", "evaluate",
                 "evaluate_fev", "report", "all"):
        assert f"rule {rule}:" in out or f"{rule} " in out
    assert "finetune" not in out
    # the fev twins of the benchmark, ranked in the report beside the published models the config names
    report = planned_job(out, "results/test/report.html")
    assert "results/test/benchmark-fev/stage2-fev-summaries.csv" in report
    assert "--reference-results config/benchmarks/fev/published/chronos_zeroshot-results-chronos_bolt_tiny.csv" \
        in report
    fev = next(b for b in out.split("rule ") if b.startswith("evaluate_fev:") and "--output results/test/"
               "benchmark-fev/stage2.csv" in b)
    assert "--benchmark config/benchmarks/fev/chronos-zeroshot-offline.yaml" in fev


def plan_on_cluster(workdir: Path, nodes: int) -> str:
    result = subprocess.run(["snakemake", "--profile", "profiles/a100-cluster", "-n", "all"], cwd=workdir,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TSM_SLURM_PARTITION": "gpuq", "TSM_SLURM_ACCOUNT": "acc",
                                 "TSM_SLURM_CPU_PARTITION": "cpuq", "TSM_SLURM_NODES": str(nodes)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_cluster_profile_plans_multinode_training_jobs(workdir):
    out = plan_on_cluster(workdir, 4)
    train = planned_job(out, "results/base/stage1/final-checkpoint")
    # 8 ranks x (4 threads + 4 DataLoader workers of chronos2-base.yaml) + the launcher
    for part in ("nodes=4", "tasks=4", "mpi=srun", "tasks_per_gpu=0", "gres=gpu:8", "slurm_partition=gpuq",
                 "cpus_per_task=65", "--ntasks-per-node=1 --exclusive --signal=TERM@300",
                 "srun --ntasks-per-node=1 --cpus-per-task=65 tsm launch --nodes 4 --gpus-per-node 8",
                 "--requeue -- --config config/training/chronos2-base.yaml"):
        assert part in train, part
    # the base config's own schedule, not the default run's test overrides (merged key by key otherwise)
    assert "--set max_steps" not in train and "--set learning_rate" not in planned_job(
        out, "results/base/stage2/final-checkpoint")
    check = next(block for block in out.split("rule ") if block.startswith("check_data:"))
    assert "slurm_partition=cpuq" in check
    assert "tsm data download" in out  # a local rule (not submitted): test_cluster_profile.py
    assert "tsm data tsmixup" not in out  # hub corpora are TSMixup already: the default run's mixing stays off


def test_cluster_profile_plans_one_node_without_mpi(workdir):
    train = planned_job(plan_on_cluster(workdir, 1), "results/base/stage1/final-checkpoint")
    assert "nodes=1" in train and "mpi=" not in train and "--ntasks-per-node" not in train
    # its own step inside the executor's, sharing that step's CPUs, so that SLURM's signal reaches it
    assert "srun --overlap --ntasks=1 --cpus-per-task=65 tsm launch --nodes 1 --gpus-per-node 8" in train


def test_tsmixup_mixes_the_training_corpora_and_takes_its_share_of_windows(workdir):
    out = snakemake(workdir, "-n", "all").stdout  # config/config.yaml: TSMixup on the synthetic corpus
    mix = planned_job(out, "results/test/data/tsmixup")
    assert "tsm data tsmixup --input results/test/data/train --output results/test/data/tsmixup" in mix
    share = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["data"]["tsmixup"]["probability"]
    for stage in ("stage1", "stage2"):
        train = planned_job(out, f"results/test/{stage}/final-checkpoint")
        assert "--set 'training_data_paths=[results/test/data/train,results/test/data/tsmixup]'" in train
        assert f"--set 'probability=[{1 - share!r},{share!r}]'" in train

    # hub corpora: one folder per dataset (download_train writes ROOT/<name>/), checked, mixed and trained on
    (workdir / "hub.yaml").write_text(yaml.safe_dump({"data": {
        "source": "hub", "hub_datasets": ["a", "b"], "tsmixup": None,
        "synth": {"kind": "mix", "num_series": 10, "min_length": 256, "max_length": 512, "seed": 0}}}))
    out = snakemake(workdir, "-n", "all", "--configfile", "hub.yaml").stdout
    assert "tsm data tsmixup" not in out
    check = next(block for block in out.split("rule ") if block.startswith("check_data:"))
    assert "tsm data check --data results/test/data/hub-train/a results/test/data/hub-train/b " in check
    assert ("--set 'training_data_paths=[results/test/data/hub-train/a,results/test/data/hub-train/b]' "
            "--set probability=null" in planned_job(out, "results/test/stage1/final-checkpoint"))


def test_finetune_mode_replaces_the_two_stages(workdir):
    out = snakemake(workdir, "-n", "all", "--config", "mode=finetune").stdout
    assert "rule finetune:" in out and "train_stage1" not in out and "train_stage2" not in out
    # the starting model (the finetune config's model_id, a hub id here) is scored as it is, for the report
    start = planned_job(out, "results/test/benchmark/start.csv")
    assert "wildcards: model=start" in start
    assert "tsm evaluate --model amazon/chronos-2 " in start and "--output results/test/benchmark/start.csv" in start
    assert "results/test/benchmark/start.csv" in planned_job(out, "results/test/report.html")

    # a local start given through the workflow config's overrides is evaluated instead, and is an input
    (workdir / "pretrained" / "final").mkdir(parents=True)
    (workdir / "ft.yaml").write_text(yaml.safe_dump({"mode": "finetune", "finetune": {
        "config": "config/training/chronos2-finetune.yaml", "overrides": {"model_id": "pretrained/final"}}}))
    start = planned_job(snakemake(workdir, "-n", "all", "--configfile", "ft.yaml").stdout,
                        "results/test/benchmark/start.csv")
    assert "tsm evaluate --model pretrained/final " in start and "pretrained/final" in start.split("output:")[0]


def test_finetune_from_random_init_plans_no_start_evaluation(workdir):
    # the workflow reads random_init as the trainer does (tsm's config loader, the rule's --set overrides)
    (workdir / "ft.yaml").write_text(yaml.safe_dump({"mode": "finetune", "finetune": {
        "config": "config/training/chronos2-finetune.yaml", "overrides": {"random_init": True}}}))
    out = snakemake(workdir, "-n", "all", "--configfile", "ft.yaml").stdout
    assert "rule finetune:" in out and "benchmark/start.csv" not in out
    assert "--set random_init=True " in planned_job(out, "results/test/finetune/final-checkpoint")


def test_pretrain_mode_plans_no_start_evaluation(workdir):
    assert "benchmark/start.csv" not in snakemake(workdir, "-n", "all").stdout


def planned_job(out: str, output: str) -> str:
    """The dry run's block for the job that writes `output` (from its `rule` line to its shell command)."""
    blocks = out.split("rule ")
    return next(block for block in blocks if f"output: {output}\n" in block)


def test_lint_is_clean(workdir):
    result = subprocess.run(["snakemake", "--lint"], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Lints for" not in result.stdout + result.stderr


def test_bad_workflow_config_fails_at_parse_time(workdir):
    (workdir / "bad.yaml").write_text("launch: {num_processes: 0, use_cpu: true, cpu_threads_per_process: 1}\n")
    result = subprocess.run(["snakemake", "-n", "all", "--configfile", "bad.yaml"], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "num_processes" in result.stdout + result.stderr


@pytest.mark.slow
def test_reduced_dag_end_to_end_then_rerun_stage2_only(workdir):
    snakemake(workdir, "all", "--configfile", "tiny.yaml")
    run = workdir / "results" / "ci"
    stage1, stage2 = run / "stage1" / "final-checkpoint", run / "stage2" / "final-checkpoint"
    log1 = (run / "stage1" / "training.log").read_text()
    assert "(2 processes" in log1 and "Step 6/6" in log1
    assert json.loads((stage2 / "config.json").read_text())["chronos_config"]["context_length"] == 256
    assert "Context length transition: model was 128, training and saving at 256" in (
        run / "stage2" / "training.log").read_text()
    for rule in ("synth_train", "download_eval", "check_data", "train_stage1", "train_stage2", "report"):
        assert (run / "benchmarks" / f"{rule}.tsv").is_file() and (run / "logs" / f"{rule}.log").is_file()
    import pandas as pd

    for model in ("stage1", "stage2", "seasonal-naive"):
        scores = pd.read_csv(run / "benchmark" / f"{model}.csv")
        assert list(scores.columns) == ["dataset", "model", "MASE", "WQL", "regime", "regime_reason"]
        assert len(scores) == 2 and set(scores["regime"]) == {"n.a." if model == "seasonal-naive" else "zero-shot"}
    # stage 2 records stage 1's corpus as inherited: the whole history is in the final model
    provenance = json.loads((stage2 / "training-provenance.json").read_text())
    assert provenance["inherited"][0]["from_stage"] == "stage1" and provenance["corpora"][0]["name"] == "train"
    html = (run / "report.html").read_text()
    assert "WQL" in html and html.count("data:image/png;base64") >= 4 and "https://" not in html
    # evaluate_fev: every model on the fev twins of the nine datasets, ranked beside published Chronos-Bolt
    for model in ("stage1", "stage2", "seasonal-naive"):
        summaries = pd.read_csv(run / "benchmark-fev" / f"{model}-fev-summaries.csv")
        assert len(summaries) == 9 and set(summaries["dataset_path"]) == {"autogluon/chronos_datasets"}
    assert 'id="leaderboard"' in html and "chronos_bolt_small (published)" in html

    from chronos import Chronos2Pipeline
    from safetensors.torch import load_file

    from tsm.config import ModelArchConfig
    from tsm.model import build_model

    # weights saved by 2 DDP ranks carry the model's own names (no DDP `module.` prefix)
    fresh = build_model(ModelArchConfig(num_layers=2), 128)
    assert set(load_file(stage1 / "model.safetensors")) == set(fresh.state_dict())
    Chronos2Pipeline.from_pretrained(stage2).predict_quantiles([__import__("torch").randn(300)], prediction_length=8)

    before1 = (stage1 / "model.safetensors").stat().st_mtime_ns
    before2 = (stage2 / "model.safetensors").stat().st_mtime_ns
    result = snakemake(workdir, "-R", "train_stage2", "all", "--configfile", "tiny.yaml")
    rerun = result.stdout + result.stderr
    assert "rule train_stage1:" not in rerun and "rule train_stage2:" in rerun
    assert (stage1 / "model.safetensors").stat().st_mtime_ns == before1  # stage 1 untouched
    assert (stage2 / "model.safetensors").stat().st_mtime_ns != before2  # stage 2 redone
