"""The SLURM profile end to end: the real snakemake slurm executor plugin submits every rule to fake SLURM
commands (fake_slurm/, first on PATH) that run the jobs on this machine. On 1 node the whole DAG runs and the
training rule runs `tsm launch` (a step of its own, overlapping the jobstep's) with the node's 2 ranks; on 2
nodes, the training jobs: their srun starts one `tsm launch` per fake node, and the two nodes' ranks meet over
loopback. The time goes into start-ups: each job is two Snakemake start-ups (the job's, then its jobstep's
srun) and a tsm command that imports torch; the run itself is the tiny one of .test/config/, with config/cluster.yaml's
own benchmark and fev tasks (fev-bench mini), whose data the download rule fetches from a hub on loopback where
Snakemake runs: the fake compute nodes cannot reach it (tests/workflow/conftest.py), as nodes without internet."""

import json
import re
import subprocess

import pandas as pd
import pytest
import yaml

from tests.fake_hub.data import PARQUET_NAME
from tests.fake_hub.fixtures import FEV_REPO
from tests.workflow.conftest import (
    TEST_OVERLAY,
    TINY_CLUSTER,
    copy_workflow,
    rule_logs,
    run_profile,
    submitted_jobs,
)
from tsm.data.download import DEFAULT_REPO
from tsm.eval.benchmark import load_benchmark
from tsm.eval.fev_tasks import read_task_definitions
from tsm.hub import read_download_marker
from tsm.layout import SEASONAL_NAIVE


@pytest.mark.e2e
@pytest.mark.parametrize("nodes", [1, 2])
def test_cluster_profile_runs_the_dag(cluster, fake_hub, nodes):
    workdir, state, env = cluster
    env["TSM_SLURM_NODES"] = str(nodes)
    ranks_per_node = 2 // nodes  # two ranks in all: both on the one node, or one on each of two
    (workdir / TEST_OVERLAY).write_text(yaml.safe_dump({"launch": {"processes_per_node": ranks_per_node}}))
    # The whole DAG on one node; on two, what changes with the nodes: the training jobs (to stage 2's model).
    run = workdir / "results" / TINY_CLUSTER["run"]
    target = "all" if nodes == 1 else str((run / "stage2" / "final-checkpoint").relative_to(workdir))
    result = run_profile(workdir, env, target)  # no retries: a failed job's own log is the one shown
    if result.returncode != 0:
        pytest.fail(f"snakemake failed:\n{result.stderr[-4000:]}\nrule logs:{rule_logs(run)}")

    submitted = submitted_jobs(state)
    for info in submitted:
        assert (state / f"{info['id']}.rc").read_text().strip() == "0", info
    jobs = {info["options"]["comment"].removeprefix("rule_"): info for info in submitted}
    assert len(jobs) == len(submitted)  # no rule submitted twice
    # download_eval is a local rule: it runs where Snakemake runs (compute nodes often lack internet)
    training = {"synth_train", "check_data", "train_stage1", "train_stage2"}
    evaluation = {f"{rule}_wildcards_{model}" for model in ("stage1", "stage2", SEASONAL_NAIVE)
                  for rule in ("evaluate", "evaluate_fev")} | {"report"}
    assert set(jobs) == (training | evaluation if nodes == 1 else training)
    assert (run / "logs" / "download_eval.log").is_file() == (nodes == 1)
    for info in submitted:  # every job ran on a node that cannot reach the hub
        job_env = json.loads((state / f"{info['id']}.env.json").read_text())
        assert job_env["HF_ENDPOINT"] != env["HF_ENDPOINT"], info["name"]
    if nodes == 1:
        downloaded_from_the_hub(run, fake_hub)
    calls = (state / "calls.log").read_text().splitlines()
    for rule, info in jobs.items():
        argv = info["argv"]
        assert {"-A", "tsm-ci", "--parsable", "--requeue"} <= set(argv)
        if not rule.startswith("train_"):  # CPU jobs on the CPU partition
            assert argv[argv.index("-p") + 1] == "cpu" and info["nodes"] == 1 and "--ntasks=1" in argv, argv
            continue
        # the training job holds its nodes whole, one task per node, the warning signal 300 s before the limit
        assert argv[argv.index("-p") + 1] == "gpu"
        required = {f"--nodes={nodes}", "--exclusive", f"--gres=gpu:{ranks_per_node}", "--signal=TERM@300"}
        if nodes > 1:
            required |= {"--ntasks=2", "--ntasks-per-node=1"}
        assert required <= set(argv), argv
        assert argv[argv.index("-t") + 1] == "30" and not any("ntasks-per-gpu" in a for a in argv)
        assert info["nodelist"] == ("127.0.0.1" if nodes == 1 else "127.0.0.[1-2]")
        cpus = next(a for a in argv if a.startswith("--cpus-per-task="))
        steps = [c for c in calls if c.startswith(f"srun {info['id']} ")]
        launch = f"{cpus} tsm launch --nodes {nodes} --cpu --gpus-per-node {ranks_per_node} "
        if nodes == 1:  # the jobstep's own step runs the rule, whose srun makes tsm launch a task of its own
            assert len(steps) == 2 and "ntasks=1 nodes=1 -n1" in steps[0] and cpus in steps[0], steps
            assert f"ntasks=1 nodes=1 --overlap --ntasks=1 {launch}" in steps[1], steps
        else:  # the batch step runs the rule, whose srun starts one tsm launch per node
            assert len(steps) == 1 and f"ntasks=2 nodes=2 --ntasks-per-node=1 {launch}" in steps[0], steps
        assert "--requeue --" in steps[-1]
    assert sum(c.startswith("scontrol show hostnames") for c in calls) == (0 if nodes == 1 else 4)

    for stage in ("stage1", "stage2"):
        steps = TINY_CLUSTER[stage]["overrides"]["max_steps"]  # the tiny run's schedule (.test/config/)
        launch_log = (run / "logs" / f"train_{stage}.log").read_text()
        lines = re.findall(r"tsm launch: node (\d)/(\d), main 127\.0\.0\.1:(\d+), 2 processes", launch_log)
        assert sorted((node, total) for node, total, _ in lines) == [(str(n), str(nodes)) for n in range(nodes)]
        assert len({port for _, _, port in lines}) == 1  # every node's ranks meet at one address
        training_log = (run / stage / "training.log").read_text()
        assert "(2 processes" in training_log and "x 2 ranks" in training_log
        assert f"Step {steps}/{steps}" in training_log
        checkpoint = run / stage / f"checkpoint-{steps}"
        assert (checkpoint / "rng_state_0.pt").is_file() and (checkpoint / "rng_state_1.pt").is_file()
        assert (run / stage / "final-checkpoint" / "model.safetensors").is_file()
    assert json.loads((run / "stage2" / "final-checkpoint" / "config.json").read_text())[
        "chronos_config"]["context_length"] == TINY_CLUSTER["stage2"]["context_length"]
    assert (run / "report.html").is_file() == (nodes == 1)


def downloaded_from_the_hub(run, fake_hub) -> None:
    """The shipped benchmark's datasets and every fev-bench mini task's data came from the loopback hub into the
    run's benchmark folder, through download_eval alone, and fev scored every task from there."""
    benchmark = TINY_CLUSTER["benchmark"]
    data = run / "data" / "benchmarks"
    tasks = read_task_definitions(benchmark["fev"]["tasks"])
    wanted = {entry.name: entry.hf_repo or DEFAULT_REPO for entry in load_benchmark(benchmark["config"])}
    wanted |= {task["dataset_config"]: task["dataset_path"] for task in tasks}
    assert FEV_REPO in wanted.values()
    for name, repo in wanted.items():
        marker = read_download_marker(data / name)
        assert marker and marker["repo"] == repo and marker["name"] == name, name
        assert marker["sha"] == fake_hub.state.repo("dataset", repo).sha
        assert fake_hub.requested(f"/datasets/{repo}/resolve/{marker['sha']}/{name}/{PARQUET_NAME}"), name
    fetched = {path.split("/resolve/")[1].split("/", 1)[1] for _, path in fake_hub.requested("/resolve/")}
    assert {f"{name}/{PARQUET_NAME}" for name in wanted} <= fetched
    for model in ("stage1", "stage2", SEASONAL_NAIVE):
        scores = pd.read_csv(run / "benchmark-fev" / f"{model}.csv")
        assert len(scores) == len(tasks) and scores["MASE"].notna().all(), model
        summaries = pd.read_csv(run / "benchmark-fev" / f"{model}-fev-summaries.csv")
        assert set(summaries["dataset_path"]) == {FEV_REPO}  # the tasks keep their identity


def test_the_plans_fetch_fev_task_data_with_the_benchmark_where_snakemake_runs(tmp_path):
    """Dry runs: on the cluster config, the local rule download_eval fetches the benchmark's and fev-bench mini's
    data from the hub in one command, and evaluate_fev runs offline on that folder; on the default (offline)
    config, fev task data the offline build did not write is all the hub is asked for."""
    from tests.workflow.test_workflow import CLUSTER_ENV, plan_on_cluster

    workdir = copy_workflow(tmp_path)
    planned = plan_on_cluster(workdir, **CLUSTER_ENV, TSM_SLURM_NODES="1")
    assert planned.returncode == 0, planned.stderr[-3000:]
    cluster = yaml.safe_load((workdir / "config" / "cluster.yaml").read_text())["benchmark"]
    root = "results/base/data/benchmarks"
    download = next(b for b in planned.stdout.split("\n\n") if "rule download_eval:" in b)
    assert f"tsm data download --root {root} --benchmark {cluster['config']} {cluster['fev']['tasks']})" in download
    fev_jobs = [b for b in planned.stdout.split("\n\n") if "rule evaluate_fev:" in b]
    assert len(fev_jobs) == 3 and all("HF_HUB_OFFLINE=1 tsm evaluate " in b and f"--datasets-root {root} " in b
                                      for b in fev_jobs)
    default = subprocess.run(["snakemake", "-n", "-p", "all"], cwd=workdir, capture_output=True, text=True,
                             timeout=300)
    assert default.returncode == 0, default.stderr[-3000:]
    offline = yaml.safe_load((workdir / "config" / "config.yaml").read_text())["benchmark"]
    assert (f"tsm data build-offline --root results/test/data/benchmarks && tsm data download --root "
            f"results/test/data/benchmarks --missing-only --benchmark {offline['fev']['tasks']})") in default.stdout
