"""The SLURM profile end to end: the real snakemake slurm executor plugin submits every rule to fake SLURM
commands (fake_slurm/, first on PATH) that run the jobs on this machine; the training rules run as 2-node
jobs whose srun starts one `tsm launch` per fake node, and the two nodes' ranks meet over loopback."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FAKE_SLURM = Path(__file__).resolve().parent / "fake_slurm"

# The reduced run of test_workflow.py, on top of config/cluster.yaml: synthetic data instead of the hub, the
# offline tiny benchmark, the test model, and one CPU rank per node (the nodes have no GPUs).
TINY_BENCHMARK = {"name": "tiny", "datasets": [
    {"name": "monash_m3_yearly", "offset": -6, "prediction_length": 6, "num_rolls": 1, "freq": "Y"},
    {"name": "monash_tourism_quarterly", "offset": -8, "prediction_length": 8, "num_rolls": 1, "freq": "Q"},
]}
TINY_CLUSTER = {
    "run": "ci",
    "data": {"source": "synth",
             "synth": {"kind": "mix", "num_series": 200, "min_length": 200, "max_length": 600, "seed": 0}},
    "benchmark": {"config": "tiny-benchmark.yaml", "offline": True},
    "stage1": {"config": "config/training/chronos2-test.yaml",
               "overrides": {"max_steps": 6, "save_steps": 3, "log_steps": 3, "context_length": 128,
                             "model.d_model": 64, "model.d_ff": 128, "model.d_kv": 16}},
    "stage2": {"config": "config/training/chronos2-test.yaml", "context_length": 256,
               "overrides": {"max_steps": 4, "save_steps": 2, "log_steps": 2}},
    "launch": {"processes_per_node": 1, "use_cpu": True, "cpu_threads_per_process": 1},
}


@pytest.fixture
def cluster(tmp_path: Path):
    workdir = tmp_path / "repo"
    workdir.mkdir()
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    (workdir / "tiny-cluster.yaml").write_text(yaml.safe_dump(TINY_CLUSTER))
    (workdir / "tiny-benchmark.yaml").write_text(yaml.safe_dump(TINY_BENCHMARK))
    state = tmp_path / "slurm"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env.update({
        "PATH": f"{FAKE_SLURM}{os.pathsep}{env['PATH']}", "FAKE_SLURM_STATE": str(state),
        "FAKE_SLURM_ACCOUNTS": "tsm-ci", "TSM_SLURM_ACCOUNT": "tsm-ci", "TSM_SLURM_PARTITION": "gpu",
        "TSM_SLURM_NODES": "2", "TSM_SLURM_TRAIN_MINUTES": "30",
    })
    yield workdir, state, env
    for job in state.glob("*.json"):  # a failed run leaves no fake job running
        info = json.loads(job.read_text())
        if not (state / f"{info['id']}.rc").exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(info["pid"], signal.SIGTERM)  # its srun passes it on to the tasks


@pytest.mark.slow
def test_cluster_profile_runs_the_dag_with_two_node_training_jobs(cluster):
    workdir, state, env = cluster
    # A --configfile on the command line replaces the profile's `configfiles`, so name all three. The status
    # checks start after 1 s instead of 40 s (the fake jobs take seconds), and a failed job is not retried, so
    # that its own log is the one shown.
    result = subprocess.run(
        ["snakemake", "--profile", "profiles/a100-cluster", "all",
         "--configfiles", "config/config.yaml", "config/cluster.yaml", "tiny-cluster.yaml",
         "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1", "--retries", "0"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    run = workdir / "results" / "ci"
    if result.returncode != 0:
        logs = "".join(f"\n==> {log.name}\n{log.read_text()[-4000:]}" for log in sorted((run / "logs").glob("*.log")))
        pytest.fail(f"snakemake failed:\n{result.stderr[-4000:]}\nrule logs:{logs}")

    submitted = [json.loads(path.read_text()) for path in state.glob("*.json")]  # one per sbatch
    for info in submitted:
        assert (state / f"{info['id']}.rc").read_text().strip() == "0", info
    jobs = {info["options"]["comment"].removeprefix("rule_"): info for info in submitted}
    assert len(jobs) == len(submitted)  # no rule submitted twice
    assert set(jobs) == {"synth_train", "download_eval", "check_data", "train_stage1", "train_stage2",
                         "evaluate_wildcards_seasonal-naive", "evaluate_wildcards_stage1",
                         "evaluate_wildcards_stage2", "report"}
    for rule, info in jobs.items():
        argv = info["argv"]
        assert {"-A", "tsm-ci", "-p", "gpu", "--parsable"} <= set(argv)
        if rule.startswith("train_"):  # one 2-node job: one task per node, the nodes to itself
            assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--exclusive", "--gres=gpu:1",
                    "--signal=TERM@300"} <= set(argv), argv
            assert argv[argv.index("-t") + 1] == "30" and not any("ntasks-per-gpu" in a for a in argv)
            assert info["nodelist"] == "127.0.0.[1-2]"
        else:
            assert info["nodes"] == 1 and "--ntasks=1" in argv, argv

    calls = (state / "calls.log").read_text().splitlines()
    for rule in ("train_stage1", "train_stage2"):
        steps = [c for c in calls if c.startswith(f"srun {jobs[rule]['id']} ")]
        assert len(steps) == 1 and "ntasks=2 nodes=2 --ntasks-per-node=1" in steps[0], steps
        assert "tsm launch --nodes 2 --cpu --gpus-per-node 1" in steps[0]
    assert calls.count("scontrol show hostnames '127.0.0.[1-2]'") == 4  # each node's launcher, both stages

    for stage, steps in (("stage1", 6), ("stage2", 4)):
        launch_log = (run / "logs" / f"train_{stage}.log").read_text()
        for rank in (0, 1):
            assert f"tsm launch: node {rank}/2, main 127.0.0.1:29500, 2 processes" in launch_log
            assert f"--num_machines 2 --machine_rank {rank} --main_process_ip 127.0.0.1" in launch_log
        training_log = (run / stage / "training.log").read_text()
        assert "(2 processes" in training_log and "x 2 ranks" in training_log
        assert f"Step {steps}/{steps}" in training_log
        checkpoint = run / stage / f"checkpoint-{steps}"
        assert (checkpoint / "rng_state_0.pt").is_file() and (checkpoint / "rng_state_1.pt").is_file()
        assert (run / stage / "final-checkpoint" / "model.safetensors").is_file()
    assert json.loads((run / "stage2" / "final-checkpoint" / "config.json").read_text())[
        "chronos_config"]["context_length"] == 256
    assert (run / "report.html").is_file()
