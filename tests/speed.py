"""Run tsm's processes as on a slower machine (see tests/speed_hook/sitecustomize.py): tests that used to wait on the
clock are run at two machine speeds to show that they now wait on events."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

HOOK_DIR = Path(__file__).resolve().parent / "speed_hook"
STEP_SLOWDOWN = "TSM_TEST_STEP_SLOWDOWN"
# The machine speeds the clock-sensitive tests run at: as measured here, and every training step twice as slow.
MACHINE_SPEEDS = (1.0, 2.0)


def machine_speed_env(env: Mapping[str, str], slowdown: float) -> dict[str, str]:
    """`env` for a spawned process (and every Python process it starts) whose training steps take `slowdown`
    times as long as on this machine."""
    out = dict(env)
    if slowdown != 1:
        out["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOK_DIR), out.get("PYTHONPATH", "")) if p)
        out[STEP_SLOWDOWN] = str(slowdown)
    return out
