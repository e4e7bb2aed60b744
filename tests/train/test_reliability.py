"""Crashes, preemption and bad numbers: real processes killed and signalled, real non-finite data."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import tsm.train.loop as loop
from tests.conftest import random_walks, save_yaml, tiny_config, write_corpus
from tests.speed import MACHINE_SPEEDS, machine_speed_env
from tsm.config import ConfigError, TsmError
from tsm.layout import RESOLVED_CONFIG
from tsm.records import PREEMPTED_EXIT_CODE
from tsm.train.loop import train
from tsm.train.reliability import BadStepGuard, Preempted, is_valid_checkpoint

CPU_RANKS = {**os.environ, "ACCELERATE_USE_CPU": "true"}


def start(cfg_path: Path, *launch: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [*launch, "-m", "tsm.train"] if launch else [sys.executable, "-m", "tsm.train"]
    return subprocess.Popen([*cmd, "--config", str(cfg_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env or os.environ, start_new_session=True)


def wait_for(predicate, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def assert_no_partial_checkpoint(out: Path) -> None:
    for path in out.glob("checkpoint-*"):
        assert is_valid_checkpoint(path), f"partial checkpoint visible: {path}"


# Where each life of the SIGKILL test is killed: each waits for an event of the run, never for a time, so the test
# kills at the same points on a machine twice as fast or twice as slow. "saved" lets the run gain a checkpoint.
KILL_POINTS = ("first step", "mid-write", "saved", "first step", "mid-write", "saved", "mid-write")


def newest_valid_checkpoint(out: Path) -> int:
    steps = [int(c.name.split("-")[1]) for c in out.glob("checkpoint-*") if is_valid_checkpoint(c)]
    return max(steps, default=0)


@pytest.mark.e2e
@pytest.mark.parametrize("slowdown", MACHINE_SPEEDS, ids=lambda s: f"machine-{s:g}x")
def test_sigkill_at_any_moment_loses_nothing(tmp_path, corpus, slowdown):
    """Lives of one run killed with SIGKILL (as the OOM killer or a node failure does) right after their first
    step, while a checkpoint is being written, and right after one is complete: no partial checkpoint is ever
    visible, and the run that finishes gives the weights of a run never killed."""
    save_steps = 4
    # Each life gains at most a checkpoint or two, so the lives cannot finish the run before they are killed.
    steps = 2 * save_steps * (len(KILL_POINTS) + 1)
    cfg = tiny_config(corpus, tmp_path / "killed", max_steps=steps, save_steps=save_steps, save_total_limit=2,
                      log_steps=1)
    cfg_path = save_yaml(cfg, tmp_path / "killed.yaml")
    env = machine_speed_env(os.environ, slowdown)
    out = Path(cfg.output_dir)
    log = out / "training.log"
    kills_mid_write = 0

    def log_text() -> str:
        return log.read_text() if log.exists() else ""

    for point in KILL_POINTS:
        offset, resumed_from = len(log_text()), newest_valid_checkpoint(out)
        proc = start(cfg_path, env=env)
        # this life trains (the log is shared by all lives; stale temp folders are cleared at start)
        trains = wait_for(lambda o=offset, p=proc: "Step " in log_text()[o:] or p.poll() is not None)
        if point == "mid-write":
            wait_for(lambda p=proc: any(out.glob(".tmp-checkpoint-*")) or p.poll() is not None)
        elif point == "saved":
            wait_for(lambda r=resumed_from, p=proc: newest_valid_checkpoint(out) > r or p.poll() is not None)
        assert trains and proc.poll() is None, f"life {point!r} ended before its kill: {proc.communicate()[0][-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        # a temporary folder left behind proves the kill landed mid-write (the next life clears it)
        kills_mid_write += any(out.glob(".tmp-checkpoint-*"))
        assert_no_partial_checkpoint(out)
    assert kills_mid_write >= 1 and newest_valid_checkpoint(out) >= save_steps, (kills_mid_write, list(out.iterdir()))
    final = start(cfg_path, env=env)
    output = final.communicate(timeout=600)[0]
    assert final.returncode == 0, output[-3000:]
    assert "Resumed from" in output
    assert_no_partial_checkpoint(out)

    straight = tiny_config(corpus, tmp_path / "straight", max_steps=steps, save_steps=save_steps, save_total_limit=2)
    train(straight)
    a = load_file(out / "final-checkpoint" / "model.safetensors")
    b = load_file(Path(straight.output_dir) / "final-checkpoint" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


def test_sigterm_mid_run_checkpoints_that_step_and_the_rerun_resumes(tmp_path, corpus, monkeypatch):
    """The preemption logic in this process: SIGTERM arrives during step 3 (sent by the real step itself, so at the
    same point on any machine); the run finishes that step, writes its checkpoint and stops; the rerun resumes."""
    signalled_at = 3
    real_step = loop.train_step

    def step_then_sigterm(*args, **kwargs):
        result = real_step(*args, **kwargs)
        if args[-1] == signalled_at:  # train_step(model, data, optimizer, scheduler, accelerator, cfg, guard, step)
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(loop, "train_step", step_then_sigterm)  # train() looks it up at each step
    handler_before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    cfg = tiny_config(corpus, out, max_steps=20, save_steps=100, log_steps=1)
    with pytest.raises(Preempted, match=f"preempted at step {signalled_at}: checkpoint-{signalled_at} written"):
        train(cfg)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the run gives the handler back
    assert [c.name for c in out.glob("checkpoint-*")] == [f"checkpoint-{signalled_at}"]  # save_steps=100: its own
    assert is_valid_checkpoint(out / f"checkpoint-{signalled_at}")
    assert "Received SIGTERM" in (out / "training.log").read_text()
    monkeypatch.setattr(loop, "train_step", real_step)
    train(tiny_config(corpus, out, max_steps=signalled_at + 2, save_steps=100, log_steps=1))
    assert f"at step {signalled_at}" in (out / "training.log").read_text() and (out / "final-checkpoint").is_dir()


@pytest.mark.e2e
def test_sigterm_checkpoints_exits_75_and_the_rerun_resumes(tmp_path, corpus):
    cfg = tiny_config(corpus, tmp_path / "run", max_steps=400, save_steps=1000, log_steps=1)
    cfg_path = save_yaml(cfg, tmp_path / "run.yaml")
    out = Path(cfg.output_dir)
    proc = start(cfg_path)
    assert wait_for(lambda: (out / "training.log").exists() and "Step 3/" in (out / "training.log").read_text())
    os.killpg(proc.pid, signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == PREEMPTED_EXIT_CODE, output[-3000:]
    assert "Received SIGTERM" in output and "preempted at step" in output
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and is_valid_checkpoint(checkpoints[0])  # save_steps=1000: the preemption one
    stopped_at = int(checkpoints[0].name.split("-")[1])
    rerun = subprocess.run([sys.executable, "-m", "tsm.train", "--config", str(cfg_path), "--max-steps",
                            str(stopped_at + 3)], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"at step {stopped_at}" in rerun.stderr and (out / "final-checkpoint").is_dir()


@pytest.mark.e2e
def test_sigusr1_with_two_ranks(tmp_path, corpus):
    cfg = tiny_config(corpus, tmp_path / "run", max_steps=400, save_steps=1000, log_steps=1)
    cfg_path = save_yaml(cfg, tmp_path / "run.yaml")
    out = Path(cfg.output_dir)
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = start(cfg_path, *launch, env=CPU_RANKS)
    assert wait_for(lambda: (out / "training.log").exists() and "Step 3/" in (out / "training.log").read_text(),
                    timeout=300)
    # SLURM signals every process of the job step; the ranks run in their own session, so killpg misses them
    import psutil

    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        p.send_signal(signal.SIGUSR1)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0 and "preempted at step" in output, output[-3000:]
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and is_valid_checkpoint(checkpoints[0])
    assert sorted(p.name for p in (checkpoints[0] / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    rerun = subprocess.run([*launch, "-m", "tsm.train", "--config", str(cfg_path), "--max-steps",
                            str(int(checkpoints[0].name.split("-")[1]) + 2)],
                           capture_output=True, text=True, timeout=600, env=CPU_RANKS)
    assert rerun.returncode == 0 and "Resumed from" in rerun.stderr, rerun.stderr[-3000:]


def test_non_finite_batches_are_skipped_and_counted(tmp_path, corpus):
    bad = write_corpus(tmp_path / "bad", [np.full(300, np.inf, dtype="float32")] * 4)
    out = tmp_path / "run"
    train(tiny_config(corpus, out, training_data_paths=[str(corpus), str(bad)], probability=[0.7, 0.3],
                      per_device_train_batch_size=1, max_steps=30, save_steps=100))
    log = (out / "training.log").read_text()
    skipped = log.count("optimizer step skipped")
    assert 0 < skipped < 30
    assert f"({skipped} non-finite steps skipped)" in log
    weights = load_file(out / "final-checkpoint" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_missing_values_train_normally(tmp_path):
    rows = random_walks(30, 200, 300)
    for r in rows:
        r[::7] = np.nan  # gaps are data, not errors
    data = write_corpus(tmp_path / "gappy", rows)
    out = tmp_path / "run"
    train(tiny_config(data, out, max_steps=6))
    assert "optimizer step skipped" not in (out / "training.log").read_text()


def test_consecutive_bad_steps_stop_the_run(tmp_path, corpus):
    good = tiny_config(corpus, tmp_path / "good", max_steps=4, save_steps=2)
    train(good)
    before = load_file(tmp_path / "good" / "checkpoint-4" / "model.safetensors")
    bad = write_corpus(tmp_path / "bad", [np.full(300, np.inf, dtype="float32")] * 4)
    with pytest.raises(TsmError, match="stopped at step 7: 3 consecutive steps with non-finite"):
        train(tiny_config(bad, tmp_path / "poisoned", max_steps=20, save_steps=100, max_consecutive_bad_steps=3,
                          resume_from_checkpoint=str(tmp_path / "good" / "checkpoint-4")))
    after = load_file(tmp_path / "good" / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / "poisoned" / "final-checkpoint").exists()


def test_guard_counts_a_poisoned_gradient_with_a_finite_loss():
    guard = BadStepGuard(limit=2, settle_every=100)
    flags = [guard.found_inf(1, torch.tensor(3.0), torch.tensor(1.5)),
             guard.found_inf(2, torch.tensor(3.0), torch.tensor(float("inf"))),
             guard.found_inf(3, torch.tensor(3.0), torch.tensor(0.5))]
    assert [float(f) for f in flags] == [0.0, 1.0, 0.0]
    assert guard.total == 0  # nothing read from the device before settle()
    guard.settle()
    assert (guard.total, guard.consecutive) == (1, 0)
    guard.found_inf(4, torch.tensor(float("nan")), torch.tensor(float("nan")))
    guard.found_inf(5, torch.tensor(3.0), torch.tensor(float("nan")))
    guard.found_inf(6, torch.tensor(3.0), torch.tensor(1.0))
    with pytest.raises(TsmError, match="stopped at step 5: 2 consecutive"):
        guard.settle()
    assert guard.total == 3
    every_two = BadStepGuard(limit=5, settle_every=2)  # settles by itself when the log steps come
    every_two.found_inf(1, torch.tensor(3.0), torch.tensor(float("inf")))
    assert every_two.total == 0
    every_two.found_inf(2, torch.tensor(3.0), torch.tensor(1.0))
    assert (every_two.total, every_two.consecutive) == (1, 0)


def test_a_skipped_step_leaves_weights_moments_and_step_count_alone():
    """found_inf makes fused AdamW skip the whole update, as if the step had not been taken."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    before = ({k: v.clone() for k, v in model.state_dict().items()},
              {k: v.clone() for k, v in optimizer.state[model.weight].items()})
    optimizer.zero_grad()
    model(torch.full((3, 4), float("nan"))).sum().backward()
    optimizer.found_inf = BadStepGuard(3, 10).found_inf(2, torch.tensor(1.0), torch.tensor(float("nan")))
    optimizer.step()
    assert all(torch.equal(before[0][k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(before[1][k], v) for k, v in optimizer.state[model.weight].items())


def test_a_run_from_before_a_new_key_resumes_at_its_default(tmp_path, corpus):
    """A run whose resolved config predates a key (length_group_batches, added after it) ran as that key's
    default: it resumes with the default and is refused, naming the key, with another value."""
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=2, save_steps=1, length_group_batches=0))
    saved = yaml.safe_load((out / RESOLVED_CONFIG).read_text())
    del saved["length_group_batches"]
    (out / RESOLVED_CONFIG).write_text(yaml.safe_dump(saved))
    with pytest.raises(ConfigError, match=r"differs in: length_group_batches\)"):
        train(tiny_config(corpus, out, max_steps=4, length_group_batches=16))
    train(tiny_config(corpus, out, max_steps=4, length_group_batches=0))
    assert "Resumed from" in (out / "training.log").read_text()


def test_output_dir_of_another_run_is_refused(tmp_path, corpus):
    train(tiny_config(corpus, tmp_path / "run", max_steps=2, save_steps=1))
    with pytest.raises(ConfigError, match="holds another run.*learning_rate"):
        train(tiny_config(corpus, tmp_path / "run", max_steps=4, learning_rate=0.5))


def test_checkpoint_of_another_architecture_is_refused(tmp_path, corpus):
    train(tiny_config(corpus, tmp_path / "a", max_steps=2, save_steps=2))
    with pytest.raises(ConfigError, match="architecture differs.*num_layers"):
        train(tiny_config(corpus, tmp_path / "b", **{"model.num_layers": 3},
                          resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2")))


def test_too_little_disk_is_a_clear_error(tmp_path, corpus):
    if not Path("/dev/shm").is_dir():
        pytest.skip("no tmpfs to fill")
    from tsm.train.reliability import check_disk_space

    class Huge(torch.nn.Module):  # the check reads parameter sizes only; meta tensors allocate nothing
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.empty(2**40, device="meta"))

    with pytest.raises(TsmError, match="not enough disk for a checkpoint"):
        check_disk_space(tmp_path, Huge(), 1)
