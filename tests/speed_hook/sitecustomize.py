"""A slower (or faster) machine for the tests: imported at start-up by every Python process whose PYTHONPATH has
this folder first (tests.speed.machine_speed_env puts it there). With TSM_TEST_STEP_SLOWDOWN=F, each training step
of tsm's loop takes F times as long as it does on this machine (F - 1 times its own duration is slept after it), so
a test can show that it waits on events, not on this machine's speed. Without the variable it does nothing and
imports nothing."""

import os
import sys

_FACTOR = float(os.environ.get("TSM_TEST_STEP_SLOWDOWN", "1") or 1)


def _slowed(train_step):
    import functools
    import time

    @functools.wraps(train_step)
    def step(*args, **kwargs):
        began = time.perf_counter()
        result = train_step(*args, **kwargs)
        time.sleep((_FACTOR - 1) * (time.perf_counter() - began))
        return result

    return step


class _PatchTrainStepOnImport:
    """A meta-path finder that lets tsm.train.loop import as usual, then wraps its train_step (train() looks it up
    as a module global at each step, so the wrapper is what runs)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tsm.train.loop":
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            module.train_step = _slowed(module.train_step)

        spec.loader.exec_module = exec_and_patch
        return spec


if _FACTOR != 1:
    sys.meta_path.insert(0, _PatchTrainStepOnImport())
