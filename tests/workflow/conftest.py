"""What the cluster tests share: a copy of the workflow, the fake SLURM first on PATH, a tiny run on top of
config/cluster.yaml, and a helper that runs the cluster profile on it."""

import json
import os
import shutil
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
    # no fev tasks: config/cluster.yaml's fev-bench mini reads the hub, which tests cannot reach
    "benchmark": {"config": "tiny-benchmark.yaml", "offline": True, "fev": None},
    "stage1": {"config": "config/training/chronos2-test.yaml",
               "overrides": {"max_steps": 6, "save_steps": 3, "log_steps": 3, "context_length": 128,
                             "model.d_model": 64, "model.d_ff": 128, "model.d_kv": 16}},
    "stage2": {"config": "config/training/chronos2-test.yaml", "context_length": 256,
               "overrides": {"max_steps": 4, "save_steps": 2, "log_steps": 2}},
    "launch": {"processes_per_node": 1, "use_cpu": True, "cpu_threads_per_process": 1},
}


def submitted_jobs(state: Path) -> list[dict]:
    """The fake's record of each sbatch call (J.json; J.env.json is the job's environment)."""
    return [json.loads(path.read_text()) for path in state.glob("*.json") if path.stem.isdigit()]


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
        "TSM_SLURM_TRAIN_MINUTES": "30", "TSM_SLURM_CPU_PARTITION": "cpu",
    })
    yield workdir, state, env
    leftovers = [info["id"] for info in submitted_jobs(state) if not (state / f"{info['id']}.rc").exists()]
    if leftovers:  # a failed run leaves no fake job running
        subprocess.run(["scancel", *leftovers], env=env, check=False)


def run_profile(workdir: Path, env: dict, *targets: str, retries: int = 0) -> subprocess.CompletedProcess:
    """The cluster profile on the tiny run. A --configfile on the command line replaces the profile's
    `configfiles`, so name all three; the status checks start after 1 s instead of 40 s (the fake jobs take
    seconds)."""
    return subprocess.run(
        ["snakemake", "--profile", "profiles/a100-cluster", *(targets or ["all"]),
         "--configfiles", "config/config.yaml", "config/cluster.yaml", "tiny-cluster.yaml",
         "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
         "--retries", str(retries)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=1200)


def rule_logs(run: Path) -> str:
    return "".join(f"\n==> {log.name}\n{log.read_text()[-4000:]}" for log in sorted((run / "logs").glob("*.log")))
