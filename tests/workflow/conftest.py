"""What the workflow tests share: a copy of the workflow, the fake SLURM first on PATH, the tiny run of .test/config/
on top of config/cluster.yaml (whose benchmark and fev tasks it keeps), a loopback hub serving their data to the
rules that run where Snakemake runs and nothing to the fake compute nodes, and a helper that runs the cluster
profile on it."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fake_hub.fixtures import (
    CHRONOS_REPO,
    FEV_REPO,
    chronos_files,
    closed_port_endpoint,
    fev_files,
    hub_environment,
)
from tests.fake_hub.server import FakeHub
from tests.speed import status_interval_env

REPO = Path(__file__).resolve().parents[2]
FAKE_SLURM = Path(__file__).resolve().parent / "fake_slurm"

# The tiny run (.test/config/config.yaml, the one test_workflow.py runs) on the cluster profile: config/cluster.yaml
# below it, then config/cluster.yaml's own benchmark section again (the tiny run's offline benchmark would replace
# it: the cluster's is read from the hub, here the loopback one), .test/config/cluster.yaml last (synthetic data,
# CPU ranks). A --configfile replaces the profile's `configfiles`, so every file is named.
SHIPPED_BENCHMARK = "cluster-benchmark.yaml"  # written by copy_workflow from config/cluster.yaml
CLUSTER_CONFIGFILES = ["config/config.yaml", "config/cluster.yaml", ".test/config/config.yaml", SHIPPED_BENCHMARK,
                       ".test/config/cluster.yaml"]
# A test's own changes to the tiny run, written into the copy of the workflow: named last when present.
TEST_OVERLAY = "tiny-cluster.yaml"


def shipped_benchmark() -> dict:
    """config/cluster.yaml's benchmark section (its benchmark file, offline: false, fev-bench mini)."""
    return {"benchmark": yaml.safe_load((REPO / "config" / "cluster.yaml").read_text())["benchmark"]}


def tiny_cluster_config() -> dict:
    """What the .test files (and the shipped benchmark) lay over config/cluster.yaml, merged as Snakemake merges
    config files (key by key): a base for a test's own overlay."""
    from snakemake.utils import update_config

    merged: dict = {}
    for name in CLUSTER_CONFIGFILES[2:]:
        update_config(merged, shipped_benchmark() if name == SHIPPED_BENCHMARK
                      else yaml.safe_load((REPO / name).read_text()))
    return merged


TINY_CLUSTER = tiny_cluster_config()
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles", ".test")


def copy_workflow(workdir: Path) -> Path:
    """The workflow and its configs (the tiny run's included) in a folder of its own, where results/ goes."""
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / name)
    (workdir / SHIPPED_BENCHMARK).write_text(yaml.safe_dump(shipped_benchmark()))
    return workdir


def serve_cluster_benchmark(hub: FakeHub) -> None:
    """The data of the shipped benchmark and fev tasks on the loopback hub, laid out as on the real one."""
    benchmark = TINY_CLUSTER["benchmark"]
    hub.state.add_repo("dataset", CHRONOS_REPO, chronos_files((benchmark["config"],)))
    hub.state.add_repo("dataset", FEV_REPO, fev_files(benchmark["fev"]["tasks"]))


def submitted_jobs(state: Path) -> list[dict]:
    """The fake's record of each sbatch call (J.json; J.env.json is the job's environment)."""
    return [json.loads(path.read_text()) for path in state.glob("*.json") if path.stem.isdigit()]


@pytest.fixture
def cluster(tmp_path: Path, fake_hub: FakeHub):
    """(workdir, fake SLURM state, environment). Snakemake and its local rules reach the loopback hub serving the
    shipped benchmark; the jobs' nodes do not (FAKE_SLURM_NODE_ENV points HF_ENDPOINT at a closed port), as
    compute nodes without internet."""
    (tmp_path / "repo").mkdir()
    workdir = copy_workflow(tmp_path / "repo")
    state = tmp_path / "slurm"
    serve_cluster_benchmark(fake_hub)
    env = {key: value for key, value in hub_environment(fake_hub, tmp_path / "hf-home").items()
           if not key.startswith("SLURM_")}
    env.update({
        "FAKE_SLURM_NODE_ENV": json.dumps({"HF_ENDPOINT": closed_port_endpoint()}),
        "PATH": f"{FAKE_SLURM}{os.pathsep}{env['PATH']}", "FAKE_SLURM_STATE": str(state),
        "FAKE_SLURM_ACCOUNTS": "tsm-ci", "TSM_SLURM_ACCOUNT": "tsm-ci", "TSM_SLURM_PARTITION": "gpu",
        "TSM_SLURM_TRAIN_MINUTES": "30", "TSM_SLURM_CPU_PARTITION": "cpu",
    })
    yield workdir, state, env
    leftovers = [info["id"] for info in submitted_jobs(state) if not (state / f"{info['id']}.rc").exists()]
    if leftovers:  # a failed run leaves no fake job running
        subprocess.run(["scancel", *leftovers], env=env, check=False)


def run_profile(workdir: Path, env: dict, *targets: str, retries: int = 0) -> subprocess.CompletedProcess:
    """The cluster profile on the tiny run (and the test's TEST_OVERLAY). The status checks start after 1 s
    instead of 40 s and come every second, without the plugin's backoff (the fake jobs take seconds)."""
    return subprocess.run(
        ["snakemake", "--profile", "profiles/a100-cluster", *(targets or ["all"]),
         "--configfiles", *CLUSTER_CONFIGFILES, *([TEST_OVERLAY] if (workdir / TEST_OVERLAY).exists() else []),
         "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
         "--retries", str(retries)],
        cwd=workdir, env=status_interval_env(env, 1), capture_output=True, text=True, timeout=1200)


def rule_logs(run: Path) -> str:
    return "".join(f"\n==> {log.name}\n{log.read_text()[-4000:]}" for log in sorted((run / "logs").glob("*.log")))
