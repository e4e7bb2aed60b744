"""Test hooks for the speed of spawned processes, imported at start-up by every Python process whose PYTHONPATH has
this folder first (tests/speed.py puts it there). Without their variables they do nothing and import nothing.

- TSM_TEST_STEP_SLOWDOWN=F: each training step of tsm's loop takes F times as long as on this machine (F - 1 times
  its own duration is slept after it), so a test can show that it waits on events, not on this machine's speed.
- TSM_TEST_SLURM_STATUS_INTERVAL_S=S: Snakemake's SLURM executor plugin checks its jobs' status every S seconds.
  The plugin adds 10 s to its interval after every check that finds no job finished, up to 180 s (to spare a real
  cluster's slurmdbd); the fake cluster's jobs take seconds, and the backoff alone cost the cluster tests minutes.
"""

import os
import sys

_FACTOR = float(os.environ.get("TSM_TEST_STEP_SLOWDOWN", "1") or 1)
_STATUS_INTERVAL = os.environ.get("TSM_TEST_SLURM_STATUS_INTERVAL_S")


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


def _slow_down_train_step(module) -> None:
    module.train_step = _slowed(module.train_step)  # train() looks it up as a module global at each step


def _fixed_status_interval(module) -> None:
    seconds = float(_STATUS_INTERVAL)
    # The plugin's executor reads and sets this property around each status check: reads get S, sets are ignored.
    module.Executor.next_seconds_between_status_checks = property(lambda self: seconds, lambda self, value: None)


class _PatchOnImport:
    """A meta-path finder that lets a module import as usual, then patches it."""

    def __init__(self, patches):
        self.patches = patches  # module name -> patch(module)

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.patches:
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module, patch = spec.loader.exec_module, self.patches[fullname]

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


_PATCHES = {
    **({"tsm.train.loop": _slow_down_train_step} if _FACTOR != 1 else {}),
    **({"snakemake_executor_plugin_slurm": _fixed_status_interval} if _STATUS_INTERVAL else {}),
}
if _PATCHES:
    sys.meta_path.insert(0, _PatchOnImport(_PATCHES))
