"""The test hook that plays a slower machine (tests/speed.py, tests/speed_hook/sitecustomize.py): installed in a
spawned process exactly when a slowdown is asked for, it wraps tsm's train_step, and a wrapped step takes the
slowdown times as long."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest

import tsm.train
from tests.speed import (
    HOOK_DIR,
    MACHINE_SPEEDS,
    STATUS_INTERVAL,
    STEP_SLOWDOWN,
    machine_speed_env,
    status_interval_env,
)

FINDER = "_PatchOnImport"
# What a spawned process has installed at start-up; it imports nothing of tsm (or torch), so it is quick.
PROBE = "import sys; print(' '.join(type(finder).__name__ for finder in sys.meta_path))"


@pytest.mark.parametrize("slowdown", MACHINE_SPEEDS, ids=lambda s: f"machine-{s:g}x")
def test_the_hook_is_installed_in_a_spawned_process_exactly_when_a_slowdown_is_set(slowdown):
    env = {k: v for k, v in os.environ.items() if k != STEP_SLOWDOWN}
    spawned = machine_speed_env(env, slowdown)
    assert (STEP_SLOWDOWN in spawned) == (slowdown != 1)
    result = subprocess.run([sys.executable, "-c", PROBE], env=spawned, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (FINDER in result.stdout.split()) == (slowdown != 1)


@pytest.fixture
def hook(monkeypatch):
    """sitecustomize loaded as a spawned process with TSM_TEST_STEP_SLOWDOWN=2 loads it; its import finder is
    handed to the test and taken off this process' sys.meta_path again."""
    monkeypatch.setenv(STEP_SLOWDOWN, "2")
    meta_path = list(sys.meta_path)
    spec = importlib.util.spec_from_file_location("speed_hook_under_test", HOOK_DIR / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        finder = sys.meta_path[0]
    finally:
        sys.meta_path[:] = meta_path
    assert type(finder).__name__ == FINDER
    return module, finder


def test_the_hook_wraps_the_train_step_of_a_freshly_imported_loop(hook, monkeypatch):
    _, finder = hook
    spec = finder.find_spec("tsm.train.loop", tsm.train.__path__)
    fresh = importlib.util.module_from_spec(spec)  # a second copy, in sys.modules only while this test runs
    monkeypatch.setitem(sys.modules, "tsm.train.loop", fresh)  # its dataclasses look their module up there
    spec.loader.exec_module(fresh)
    assert fresh.train_step.__name__ == "train_step" and fresh.train_step.__wrapped__.__module__ == "tsm.train.loop"
    assert finder.find_spec("tsm.train.other", tsm.train.__path__) is None  # every other import is left alone


def test_a_wrapped_step_takes_the_slowdown_times_its_own_duration(hook):
    """The wrapper sleeps (slowdown - 1) x the step's own duration after it: a lower bound that holds on any
    machine; the upper bound is generous, for a loaded one."""
    module, _ = hook
    own = []

    def step(seconds: float) -> str:
        began = time.perf_counter()
        time.sleep(seconds)
        own.append(time.perf_counter() - began)
        return "result"

    began = time.perf_counter()
    assert module._slowed(step)(0.05) == "result"
    took = time.perf_counter() - began
    assert 2 * own[0] <= took < 2 * own[0] + 5.0


def test_the_slurm_plugin_checks_status_at_the_fixed_interval_without_backing_off():
    """The plugin sets its next interval after each status check (+10 s while no job finished); under the hook the
    property reads the fixed interval whatever was set."""
    probe = ("from snakemake_executor_plugin_slurm import Executor; e = object.__new__(Executor); "
             "e.next_seconds_between_status_checks = 180; print(e.next_seconds_between_status_checks)")
    env = {k: v for k, v in os.environ.items() if k != STATUS_INTERVAL}
    for spawned, expected in ((env, "180"), (status_interval_env(env, 1), "1.0")):
        result = subprocess.run([sys.executable, "-c", probe], env=spawned, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.split()[-1] == expected
