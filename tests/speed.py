"""The speed of spawned processes (see tests/speed_hook/sitecustomize.py): tsm's training steps as on a slower
machine, so tests that used to wait on the clock run at two machine speeds to show that they now wait on events;
and the SLURM executor plugin's status checks at a fixed interval, for the fake cluster's jobs of seconds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

HOOK_DIR = Path(__file__).resolve().parent / "speed_hook"
STEP_SLOWDOWN = "TSM_TEST_STEP_SLOWDOWN"
STATUS_INTERVAL = "TSM_TEST_SLURM_STATUS_INTERVAL_S"
# The machine speeds the clock-sensitive tests run at: as measured here, and every training step twice as slow.
MACHINE_SPEEDS = (1.0, 2.0)


def machine_speed_env(env: Mapping[str, str], slowdown: float) -> dict[str, str]:
    """`env` for a spawned process (and every Python process it starts) whose training steps take `slowdown`
    times as long as on this machine."""
    out = dict(env)
    if slowdown != 1:
        out = _with_hook(out)
        out[STEP_SLOWDOWN] = str(slowdown)
    return out


def status_interval_env(env: Mapping[str, str], seconds: float) -> dict[str, str]:
    """`env` for a Snakemake whose SLURM executor plugin checks its jobs every `seconds`, without backing off."""
    return {**_with_hook(env), STATUS_INTERVAL: str(seconds)}


def _with_hook(env: Mapping[str, str]) -> dict[str, str]:
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(HOOK_DIR)]
    return {**env, "PYTHONPATH": os.pathsep.join([str(HOOK_DIR), *paths])}
