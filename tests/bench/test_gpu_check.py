"""bench/gpu_check.py's measurement (issue 26, readings 5, 6, 10): windows that compiled are dropped, syncs
are counted in the step they happen in, GPU names, and the whole script on the test config (CPU)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.bench.gpu_check_module import SCRIPT, gpu_check


def test_windows_in_which_a_graph_was_compiled_are_dropped():
    check = gpu_check()
    windows = [check.Window(1, 10, 30.0, 3), check.Window(11, 20, 0.5, 0), check.Window(21, 30, 9.0, 1),
               check.Window(31, 40, 0.5, 0), check.Window(41, 45, 0.25, 0)]  # 45 steps: a last window of 5
    kept, dropped = check.kept_windows(windows, warmup=1)
    assert [w.first_step for w in kept] == [11, 31, 41] and dropped == 1
    assert [w.steps for w in kept] == [10, 10, 5]
    kept, dropped = check.kept_windows(windows, warmup=0)
    assert [w.first_step for w in kept] == [11, 31, 41] and dropped == 2


@pytest.mark.parametrize("name, tflops", [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756),
                                          ("NVIDIA H100 NVL", 835), ("NVIDIA H200", 989), ("NVIDIA H200 NVL", 835),
                                          ("NVIDIA A100-SXM4-80GB", 312)])
def test_gpu_names_read_as_their_own_part(name, tflops):
    assert gpu_check().peak_flops(name) == tflops * 1e12


@pytest.mark.e2e
def test_syncs_are_counted_in_the_step_whose_body_makes_them(tmp_path):
    """The bad-step guard settles (a host read) in the body of every tenth step, the monitor reads the loss at
    the same log steps: counted from the hand-over before them, they landed on the quiet step before (the
    reading); counted from the start of the step's body, the quiet steps have none. On CPU the two reads are
    recorded where they run (on a GPU, CUDA's sync debug mode reports them)."""
    import numpy as np

    from tsm.data.writer import save_table
    from tsm.train.monitor import TrainingMonitor
    from tsm.train.reliability import BadStepGuard

    check = gpu_check()
    rng = np.random.default_rng(0)
    import pyarrow as pa

    series = [np.cumsum(rng.normal(size=int(n))).astype(np.float32) for n in rng.integers(300, 900, 64)]
    save_table(pa.table({"target": series}), tmp_path / "corpus")
    cfg = check.base_config(1, True, {"training_data_paths": [str(tmp_path / "corpus")], "probability": None,
                                      "output_dir": str(tmp_path / "run"), "max_steps": 30, "save_steps": 1000,
                                      "per_device_train_batch_size": 4, "dataloader_num_workers": 0})
    counter = check.SyncCounter(cuda=False)
    settle, flush = BadStepGuard.settle, TrainingMonitor._flush

    def settling(guard):
        if guard._pending:
            counter.sync()
        return settle(guard)

    def flushing(monitor, step):
        counter.sync()
        return flush(monitor, step)

    BadStepGuard.settle, TrainingMonitor._flush = settling, flushing
    try:
        with counter:
            check.loop.train(cfg)
    finally:
        BadStepGuard.settle, TrainingMonitor._flush = settle, flush
    assert counter.quiet_step_syncs(30) == (0, 18)
    assert counter.quiet_step_syncs(30, marker="hand-over")[0] > 0  # the old attribution
    syncs = counter.syncs_by_step()
    assert syncs[20] >= 2 and syncs[30] >= 2  # the guard's settle and the monitor's read, in the log steps


@pytest.mark.e2e
def test_the_gpu_check_runs_the_training_loop_on_cpu_and_drops_the_compile_window(tmp_path):
    """Compiled (as on a GPU) with no warm-up window: the window that built the graphs is dropped for it."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--steps", "25", "--series", "300",
                          "--series-stage2", "100", "--warmup-windows", "0", "--set", "parallelism.torch_compile=true"],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = re.findall(r"^\| (\d) \| (\d+) \| 16 \| ([\d,]+) \| ([\d,]+) \| ([\d.]+)% \|", run.stdout, re.M)
    assert [(stage, context) for stage, context, *_ in rows] == [("1", "512"), ("2", "1024")], run.stdout
    compiles = re.findall(r"compiled graphs: (\d+); median over (\d+) of (\d+) windows \((\d+) dropped", run.stdout)
    assert len(compiles) == 2, run.stdout
    graphs, kept, windows, dropped = map(int, compiles[0])
    assert graphs >= 1 and windows == 3 and dropped >= 1 and kept == windows - dropped  # 25 steps: 10 + 10 + 5
