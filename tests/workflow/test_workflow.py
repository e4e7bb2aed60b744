"""The Snakemake DAG for real: plan, lint, a reduced end-to-end run with 2 CPU ranks, and -R train_stage2."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.workflow.conftest import REPO, copy_workflow
from tsm.layout import SEASONAL_NAIVE

# The tiny run every rule runs in (on top of config/config.yaml): .test/config/, as snakemake-workflows keep theirs.
TINY = ".test/config/config.yaml"
TINY_CONFIG = yaml.safe_load((REPO / TINY).read_text())
CLUSTER_ENV = {"TSM_SLURM_PARTITION": "gpuq", "TSM_SLURM_ACCOUNT": "acc", "TSM_SLURM_CPU_PARTITION": "cpuq"}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["snakemake", "--profile", "profiles/local", *args], cwd=workdir,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path)


def test_dry_run_plans_the_whole_dag(workdir):
    out = snakemake(workdir, "-n", "all").stdout
    for rule in ("synth_train", "download_eval", "check_data", "train_stage1", "train_stage2", "evaluate",
                 "evaluate_fev", "report", "all"):
        assert f"rule {rule}:" in out or f"{rule} " in out
    assert "finetune" not in out and "benchmark/start.csv" not in out  # pretrain mode: no start model to score
    # the fev twins of the benchmark, ranked in the report beside the published models the config names
    report = planned_job(out, "results/test/report.html")
    assert "results/test/benchmark-fev/stage2-fev-summaries.csv" in report
    assert "--reference-results config/benchmarks/fev/published/chronos_zeroshot-results-chronos_bolt_tiny.csv" \
        in report
    fev = next(b for b in out.split("rule ") if b.startswith("evaluate_fev:") and "--output results/test/"
               "benchmark-fev/stage2.csv" in b)
    assert "--benchmark config/benchmarks/fev/chronos-zeroshot-offline.yaml" in fev


def plan_on_cluster(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A dry run of the cluster profile with the cluster settings in `env` (TSM_SLURM_...)."""
    return subprocess.run(["snakemake", "--profile", "profiles/a100-cluster", "-n", "all", *args], cwd=workdir,
                          capture_output=True, text=True, timeout=300, env={**clean_environment(), **env})


def clean_environment() -> dict:
    """This process's environment without cluster settings of its own (the tests set theirs)."""
    return {key: value for key, value in os.environ.items() if not key.startswith(("TSM_SLURM_", "SLURM_"))}


def planned_on_cluster(workdir: Path, nodes: int) -> str:
    result = plan_on_cluster(workdir, **CLUSTER_ENV, TSM_SLURM_NODES=str(nodes))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_cluster_profile_plans_multinode_training_jobs(workdir):
    out = planned_on_cluster(workdir, 4)
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
    train = planned_job(planned_on_cluster(workdir, 1), "results/base/stage1/final-checkpoint")
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
        assert "--set 'training_data_paths=[results/test/data/train, results/test/data/tsmixup]'" in train
        probability = re.search(r"--set 'probability=(\[[^]]*\])'", train).group(1)
        assert yaml.safe_load(probability) == [1 - share, share]  # numbers, as YAML reads them back

    # hub corpora: one folder per dataset (download_train writes ROOT/<name>/), checked, mixed and trained on
    (workdir / "hub.yaml").write_text(yaml.safe_dump({"data": {
        "source": "hub", "hub_datasets": ["a", "b"], "tsmixup": None,
        "synth": {"kind": "mix", "num_series": 10, "min_length": 256, "max_length": 512, "seed": 0}}}))
    out = snakemake(workdir, "-n", "all", "--configfile", "hub.yaml").stdout
    assert "tsm data tsmixup" not in out
    # the hub repository comes from the schema's default: no config names it (nor repeats it)
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert "hub_repo" not in yaml.safe_load((REPO / "config" / "config.yaml").read_text())["data"]
    repo = schema["properties"]["data"]["properties"]["hub_repo"]["default"]
    assert f"tsm data download --root results/test/data/hub-train --repo {repo} --dataset a b " in out
    check = next(block for block in out.split("rule ") if block.startswith("check_data:"))
    assert "tsm data check --data results/test/data/hub-train/a results/test/data/hub-train/b " in check
    assert ("--set 'training_data_paths=[results/test/data/hub-train/a, results/test/data/hub-train/b]' "
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
    assert "--set random_init=true " in planned_job(out, "results/test/finetune/final-checkpoint")


# One stage override of each kind a workflow config holds, as a person writes them (1.0e-5: a float in exponent
# form). Python's str() of these reached the trainer as "None", "data/bench" (cut at the `#`), "1e-05".
EVERY_KIND_OF_OVERRIDE = """
stage1:
  overrides:
    save_total_limit: null
    tf32: false
    learning_rate: 1.0e-5
    benchmark_datasets_root: "data/bench #1: root"
    model_id: "null"
    lora.target_modules: [self_attention.q, "output #2: layer"]
    parallelism: {strategy: fsdp, reshard_after_forward: false, gradient_checkpointing: true, torch_compile: "auto"}
"""


def training_argv(job: str) -> list[str]:
    """The arguments `tsm.train` gets from a dry run's printed shell command of a training job: the line as
    the shell splits it, from after `-m tsm.train` up to the log redirection."""
    line = next(line for line in job.splitlines() if "-m tsm.train " in line)
    words = shlex.split(line)
    arguments = words[words.index("tsm.train") + 1:]
    return arguments[:arguments.index(">")]


def resolved_value(resolved: dict, key: str):
    """A dotted override key's value in a resolved training config (top-level monitoring keys are shorthand)."""
    from tsm.config import MonitorConfig

    if key in MonitorConfig.model_fields:
        key = f"monitoring.{key}"
    for part in key.split("."):
        resolved = resolved[part]
    return resolved


def test_stage_overrides_reach_the_trainer_as_the_workflow_config_holds_them(workdir, monkeypatch):
    from snakemake.utils import update_config

    from tsm.config import config_from_argv

    (workdir / "kinds.yaml").write_text(EVERY_KIND_OF_OVERRIDE)
    job = planned_job(snakemake(workdir, "-n", "-p", "all", "--configfile", "kinds.yaml").stdout,
                      "results/test/stage1/final-checkpoint")
    # what the trainer is given: the exact command line, parsed by tsm train's own config parsing
    monkeypatch.chdir(workdir)
    resolved = config_from_argv(training_argv(job)).model_dump()
    # the overrides the workflow holds: config/config.yaml's, merged key by key with the file above
    workflow_config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    update_config(workflow_config, yaml.safe_load(EVERY_KIND_OF_OVERRIDE))
    overrides = workflow_config["stage1"]["overrides"]
    assert set(yaml.safe_load(EVERY_KIND_OF_OVERRIDE)["stage1"]["overrides"]) <= set(overrides)
    for key, value in overrides.items():
        assert resolved_value(resolved, key) == value, key
        assert type(resolved_value(resolved, key)) is type(value), key  # null stays None, "null" a string


def test_the_monitoring_section_reaches_every_stage_and_a_stage_override_wins(workdir, monkeypatch):
    from tsm.config import config_from_argv

    (workdir / "trackers.yaml").write_text(yaml.safe_dump({
        "monitoring": {"report_to": ["tensorboard", "mlflow"], "mlflow_experiment": "chronos2 #7",
                       "mlflow_tracking_uri": None},
        "stage1": {"overrides": {"report_to": ["tensorboard"]}}}))
    plan = snakemake(workdir, "-n", "-p", "all", "--configfile", "trackers.yaml").stdout
    monkeypatch.chdir(workdir)
    monitoring = {stage: config_from_argv(training_argv(planned_job(
        plan, f"results/test/{stage}/final-checkpoint"))).monitoring for stage in ("stage1", "stage2")}
    assert monitoring["stage2"].report_to == ["tensorboard", "mlflow"]
    assert monitoring["stage1"].report_to == ["tensorboard"]  # the stage's own override, given after
    assert {m.mlflow_experiment for m in monitoring.values()} == {"chronos2 #7"}
    assert {m.mlflow_tracking_uri for m in monitoring.values()} == {None}
    out = refused(workdir, {"monitoring": {"report_to": ["tensorboard", "neptune"]}})
    assert "key monitoring.report_to.1: 'neptune' is not one of" in out


def planned_job(out: str, output: str) -> str:
    """The dry run's block for the job that writes `output` (from its `rule` line to its shell command)."""
    blocks = out.split("rule ")
    return next(block for block in blocks if f"output: {output}\n" in block)


@pytest.mark.parametrize("configfiles", [(), ("--configfile", "config/finetune-own-data.yaml")],
                         ids=["default", "own-data"])
def test_lint_is_clean(workdir, configfiles):
    result = subprocess.run(["snakemake", "--lint", *configfiles], cwd=workdir, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "Lints for" not in result.stdout + result.stderr


def refused(workdir: Path, config: dict, *args: str) -> str:
    """The output of a dry run on `config` (on top of config/config.yaml) that must stop at parse time."""
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(["snakemake", "-n", "all", "--configfile", "bad.yaml", *args], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Building DAG of jobs" not in out, out[-3000:]
    return out


def test_bad_workflow_config_fails_at_parse_time(workdir):
    out = refused(workdir, {"launch": {"num_processes": 0, "use_cpu": True, "cpu_threads_per_process": 1}})
    assert "key launch: Additional properties are not allowed ('num_processes' was unexpected)" in out


# A whole valid config (the conditional cases replace the workflow config: config/config.yaml has every section)
WHOLE = {"run": "r", "mode": "pretrain", "data": {"source": "hub", "hub_datasets": ["a"]},
         "benchmark": {"config": "b.yaml", "offline": True}, "stage1": {"config": "c.yaml"},
         "stage2": {"config": "c.yaml", "context_length": 32}, "launch": {
             "mode": "local", "nodes": 1, "processes_per_node": 1, "use_cpu": True, "cpu_threads_per_process": 1}}


def whole_without(*keys: str, **changes) -> dict:
    return {**{key: value for key, value in WHOLE.items() if key not in keys}, **changes}


@pytest.mark.parametrize(("config", "key", "why"), [
    # source: hub trains on hub_datasets: none, or an empty list, is refused naming the pair
    (whole_without(data={"source": "hub"}), "data", "'hub_datasets' is a required property (data.source: hub"),
    (whole_without(data={"source": "hub", "hub_datasets": []}), "data.hub_datasets",
     "[] should be non-empty (data.source: hub trains on"),
    # source: synth generates the corpus data.synth describes
    (whole_without(data={"source": "synth"}), "data", "'synth' is a required property (data.source: synth"),
    # mode: pretrain trains stage1 and stage2; mode: finetune its finetune section
    (whole_without("stage2"), "(top level)", "'stage2' is a required property (mode: pretrain trains stage1"),
    (whole_without(mode="finetune"), "(top level)", "'finetune' is a required property (mode: finetune"),
])
def test_a_config_breaking_a_conditional_requirement_is_refused(workdir, config, key, why):
    out = refused(workdir, config, "--replace-workflow-config")
    assert "workflow config (" in out and f"key {key}: {why}" in out, out[-2000:]


def test_bad_cluster_settings_stop_the_plan_naming_each_variable(workdir):
    result = plan_on_cluster(workdir, **CLUSTER_ENV, TSM_SLURM_TRAIN_MINUTES="90m", TSM_SLURM_NODES="0",
                             TSM_SLURM_SIGNAL_SECONDS="x")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Building DAG" not in out, out[-3000:]
    for expected in ("TSM_SLURM_TRAIN_MINUTES='90m': expected a whole number >= 1",
                     "TSM_SLURM_NODES='0': expected a whole number >= 1",
                     "TSM_SLURM_SIGNAL_SECONDS='x': expected a whole number >= 1"):
        assert expected in out, out[-3000:]
    # whole numbers, but the warning would come before the leg starts
    result = plan_on_cluster(workdir, **CLUSTER_ENV, TSM_SLURM_TRAIN_MINUTES="60", TSM_SLURM_SIGNAL_SECONDS="3600")
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "TSM_SLURM_SIGNAL_SECONDS=3600: expected fewer seconds than" in out, out


def test_a_cluster_run_without_partition_or_account_submits_nothing(workdir):
    """A dry run plans without them (it submits nothing); a real run stops before its first job, naming both."""
    assert plan_on_cluster(workdir).returncode == 0
    result = subprocess.run(["snakemake", "--profile", "profiles/a100-cluster", "all"], cwd=workdir,
                            capture_output=True, text=True, timeout=300, env=clean_environment())
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "environment variable TSM_SLURM_PARTITION and TSM_SLURM_ACCOUNT not set" in out
    assert not (workdir / "results").exists() and "Submitted" not in out


def test_tiny_test_config_plans_every_rule(workdir):
    """.test/config/config.yaml (the end-to-end run below) plans the default DAG's every rule, small."""
    out = snakemake(workdir, "-n", "all", "--configfile", TINY).stdout
    for rule in ("synth_train", "tsmixup_train", "download_eval", "check_data", "train_stage1", "train_stage2",
                 "evaluate", "evaluate_fev", "report"):
        assert f"rule {rule}:" in out or f"localrule {rule}:" in out, rule
    assert f"--benchmark {TINY_CONFIG['benchmark']['config']} " in out
    assert f"--benchmark {TINY_CONFIG['benchmark']['fev']['tasks']} " in out


@pytest.mark.e2e
def test_reduced_dag_end_to_end_then_rerun_stage2_only(workdir):
    # both stages report to MLflow too (a sqlite store here), as the workflow config's monitoring section says
    mlflow_store = f"sqlite:///{workdir / 'mlflow.db'}"
    (workdir / "trackers.yaml").write_text(yaml.safe_dump({"monitoring": {
        "report_to": ["tensorboard", "mlflow"], "mlflow_tracking_uri": mlflow_store}}))
    configs = ("--configfile", TINY, "trackers.yaml")
    snakemake(workdir, "all", *configs)
    run = workdir / "results" / TINY_CONFIG["run"]
    stage1, stage2 = run / "stage1" / "final-checkpoint", run / "stage2" / "final-checkpoint"
    steps1 = TINY_CONFIG["stage1"]["overrides"]["max_steps"]
    context1 = TINY_CONFIG["stage1"]["overrides"]["context_length"]
    context2 = TINY_CONFIG["stage2"]["context_length"]
    log1 = (run / "stage1" / "training.log").read_text()
    assert "(2 processes" in log1 and f"Step {steps1}/{steps1}" in log1
    assert json.loads((stage2 / "config.json").read_text())["chronos_config"]["context_length"] == context2
    assert f"Context length transition: model was {context1}, training and saving at {context2}" in (
        run / "stage2" / "training.log").read_text()
    for rule in ("synth_train", "tsmixup_train", "download_eval", "check_data", "train_stage1", "train_stage2",
                 "report"):
        assert (run / "benchmarks" / f"{rule}.tsv").is_file() and (run / "logs" / f"{rule}.log").is_file()
    import pandas as pd

    benchmark = yaml.safe_load((workdir / TINY_CONFIG["benchmark"]["config"]).read_text())
    for model in ("stage1", "stage2", SEASONAL_NAIVE):
        scores = pd.read_csv(run / "benchmark" / f"{model}.csv")
        assert list(scores.columns) == ["dataset", "model", "MASE", "WQL", "regime", "regime_reason"]
        assert list(scores["dataset"]) == [dataset["name"] for dataset in benchmark["datasets"]]
        assert set(scores["regime"]) == {"n.a." if model == SEASONAL_NAIVE else "zero-shot"}
    # stage 2 records stage 1's corpus as inherited: the whole history is in the final model
    provenance = json.loads((stage2 / "training-provenance.json").read_text())
    assert provenance["inherited"][0]["from_stage"] == "stage1" and provenance["corpora"][0]["name"] == "train"
    html = (run / "report.html").read_text()
    assert "WQL" in html and html.count("data:image/png;base64") >= 4 and "https://" not in html
    # evaluate_fev: every model on the fev twins of the benchmark's datasets, ranked beside published Chronos-Bolt
    tasks = yaml.safe_load((workdir / TINY_CONFIG["benchmark"]["fev"]["tasks"]).read_text())["tasks"]
    for model in ("stage1", "stage2", SEASONAL_NAIVE):
        summaries = pd.read_csv(run / "benchmark-fev" / f"{model}-fev-summaries.csv")
        assert len(summaries) == len(tasks) and set(summaries["dataset_path"]) == {"autogluon/chronos_datasets"}
    assert 'id="leaderboard"' in html and "chronos_bolt_small (published)" in html

    from chronos import Chronos2Pipeline
    from safetensors.torch import load_file

    from tsm.config import ModelArchConfig
    from tsm.model import build_model

    # weights saved by 2 DDP ranks carry the model's own names (no DDP `module.` prefix)
    fresh = build_model(ModelArchConfig(num_layers=2), context1)
    assert set(load_file(stage1 / "model.safetensors")) == set(fresh.state_dict())
    Chronos2Pipeline.from_pretrained(stage2).predict_quantiles([__import__("torch").randn(300)], prediction_length=8)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("tsm").experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"{TINY_CONFIG['run']}/stage1", f"{TINY_CONFIG['run']}/stage2"]
    for tracked in runs:
        stage = tracked.info.run_name.split("/")[1]
        steps = TINY_CONFIG[stage]["overrides"]["max_steps"]
        assert tracked.info.status == "FINISHED" and tracked.data.params["max_steps"] == str(steps)
        assert max(m.step for m in client.get_metric_history(tracked.info.run_id, "train/loss")) == steps

    # snakemake --report on the finished run: every report() output with its caption (workflow/report/*.rst)
    snakemake(workdir, "all", *configs, "--report", "snakemake-report.html")
    report = (workdir / "snakemake-report.html").read_text()
    for caption in ("Benchmark scores of", "The data checks of the training corpora", "report of run"):
        assert caption in report, caption

    # -R train_stage2 plans stage 2 and what follows from it, not stage 1; run, stage 2 alone is redone
    plan = snakemake(workdir, "-n", "-R", "train_stage2", "all", *configs).stdout
    planned = {line.split()[0] for line in plan.split("Job stats:")[1].split("total")[0].splitlines()[3:] if line}
    assert planned == {"train_stage2", "evaluate", "evaluate_fev", "report", "all"}, plan[-2000:]
    before1 = (stage1 / "model.safetensors").stat().st_mtime_ns
    before2 = (stage2 / "model.safetensors").stat().st_mtime_ns
    result = snakemake(workdir, "-R", "train_stage2", str(stage2.relative_to(workdir)), *configs)
    rerun = result.stdout + result.stderr
    assert "rule train_stage1:" not in rerun and "rule train_stage2:" in rerun
    assert (stage1 / "model.safetensors").stat().st_mtime_ns == before1  # stage 1 untouched
    assert (stage2 / "model.safetensors").stat().st_mtime_ns != before2  # stage 2 redone
