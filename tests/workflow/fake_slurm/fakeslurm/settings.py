"""The fake cluster's configuration: what slurm.conf (man slurm.conf: KillWait, JobRequeue, KillOnBadExit,
MinJobAge) and cgroup.conf (man cgroup.conf: SignalChildrenProcesses) say on a real one, read from FAKE_SLURM_*
variables, and where the fake keeps its state ($FAKE_SLURM_STATE)."""

from __future__ import annotations

import json
import os
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_STATE", "/tmp/fake-slurm"))
# the executables in fake_slurm/ run this script; the controller of each job runs it too
ENTRY = Path(__file__).resolve().parents[1] / "run_command.py"
TICK = 0.05
MIN_JOB_AGE = 300  # `scontrol show config`: how long squeue still lists a finished job


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value not in ("0", "no", "false")


SECONDS_PER_MINUTE = env_float("FAKE_SLURM_SECONDS_PER_MINUTE", 60.0)
KILL_WAIT = env_float("FAKE_SLURM_KILL_WAIT", 30.0)
REQUEUE_DELAY = env_float("FAKE_SLURM_REQUEUE_DELAY", 1.0)
SIGNAL_CHILDREN = env_flag("FAKE_SLURM_SIGNAL_CHILDREN", False)


def node_environment() -> dict[str, str]:
    """FAKE_SLURM_NODE_ENV (a JSON mapping): what a compute node's own environment sets over the one sbatch
    exports, e.g. an HF_ENDPOINT nothing answers at, as on nodes without internet."""
    value = os.environ.get("FAKE_SLURM_NODE_ENV", "").strip()
    return {str(k): str(v) for k, v in json.loads(value).items()} if value else {}
