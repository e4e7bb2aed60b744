"""Training jobs through what a real SLURM does to them (the fake in fake_slurm/ models it): the time limit
with its warning signal, preemption with a grace time and both PreemptModes, and a run that never gets
anywhere. What must hold: the ranks checkpoint before the end, the job comes back under the same id and
resumes, a training needing many legs completes unattended, and a run stuck at one step stops.

The tests wait on events, not on this machine's speed: a leg's time is up (`fake-timeout`) once its log shows it
trained two steps, and the preemption comes at a step; the clock-sensitive ones run at two machine speeds
(tests/speed.py: every training step twice as slow). All of them run whole jobs: marked e2e."""

import json
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.speed import MACHINE_SPEEDS, machine_speed_env
from tests.workflow.conftest import TINY_CLUSTER, rule_logs, run_profile, submitted_jobs
from tsm.records import TrainingSummary

pytestmark = pytest.mark.e2e

# Steps of about half a second on 2 CPU ranks, so that a leg is a few steps, as on a real cluster.
SLOW_STEPS = {"per_device_train_batch_size": 256, "context_length": 1024, "save_steps": 100000, "log_steps": 1,
              "model.d_model": 64, "model.d_ff": 128, "model.d_kv": 16}
LONG_SERIES = {"kind": "mix", "num_series": 200, "min_length": 600, "max_length": 1200, "seed": 0}


def stage1_only(workdir: Path, **stage1_overrides) -> None:
    """The tiny cluster run on one node with 2 ranks, its stage 1 set up for the test."""
    tiny = {**TINY_CLUSTER, "data": {"source": "synth", "synth": LONG_SERIES},
            "stage1": {"config": "config/training/chronos2-test.yaml", "overrides": stage1_overrides},
            "launch": {**TINY_CLUSTER["launch"], "processes_per_node": 2}}
    (workdir / "tiny-cluster.yaml").write_text(yaml.safe_dump(tiny))


def legs(run_dir: Path) -> list[tuple[int, int, str]]:
    summary = TrainingSummary.read(run_dir)
    return [(leg.first_step, leg.last_step, leg.status) for leg in summary.legs] if summary else []


def machine(slowdown: float) -> str:
    return f"machine-{slowdown:g}x"


STEP_LINE = re.compile(r"\bStep (\d+)/\d+ \|")


def last_logged_step(training_log: Path) -> int:
    """The last step that training.log reports as trained (0 before any)."""
    text = training_log.read_text() if training_log.exists() else ""
    return max((int(n) for n in STEP_LINE.findall(text)), default=0)


def end_legs_by_events(state: Path, run_dir: Path, env: dict, legs_to_end: int, steps_per_leg: int,
                       profile: Future) -> list[int]:
    """While the workflow runs: for each of the training job's first `legs_to_end` legs, once the leg has
    trained `steps_per_leg` steps past where it resumed, its time is up (`fake-timeout`: the warning signal
    now, the limit after it, as the timer would do it). Returns the step each ended leg was told at."""
    told: dict[int, int] = {}
    while not profile.done() and len(told) < legs_to_end:
        jobs = [info for info in submitted_jobs(state) if info["options"].get("comment") == "rule_train_stage1"]
        st = json.loads((state / f"{jobs[0]['id']}.state").read_text()) if jobs else {}
        leg = st.get("restarts", 0)
        earlier = legs(run_dir)
        # this leg's start: where the last leg checkpointed (its summary is written before the requeue)
        if st.get("state") == "RUNNING" and leg not in told and len(earlier) >= leg:
            resumed_at = earlier[leg - 1][1] if leg else 0
            step = last_logged_step(run_dir / "training.log")
            if step >= resumed_at + steps_per_leg:
                subprocess.run(["fake-timeout", jobs[0]["id"]], env=env, check=True, capture_output=True)
                told[leg] = step
        time.sleep(0.2)
    return [told[leg] for leg in sorted(told)]


@pytest.mark.parametrize("slowdown", MACHINE_SPEEDS, ids=machine)
def test_a_training_longer_than_its_time_limit_completes_in_requeued_legs(cluster, slowdown):
    """The warning signal 2 minutes before the limit: each leg trains until the signal, checkpoints, and
    `tsm launch` requeues the job; the plugin keeps waiting on the same job id, and with no retries at all
    the training completes over as many legs as it needs. A leg's time is up once it trained two steps (an
    event), so the first leg ends by the time limit's signal and the second resumes and finishes, on any
    machine. (One leg more costs a whole job start, about a minute and a half here, and shows nothing new.)"""
    workdir, state, env = cluster
    env.update(machine_speed_env(env, slowdown))
    env.update({"TSM_SLURM_NODES": "1", "TSM_SLURM_TRAIN_MINUTES": "30", "TSM_SLURM_SIGNAL_SECONDS": "120",
                "FAKE_SLURM_SECONDS_PER_MINUTE": "60", "FAKE_SLURM_KILL_WAIT": "10"})
    max_steps, steps_per_leg, ended_legs = 12, 2, 1
    stage1_only(workdir, max_steps=max_steps, **SLOW_STEPS)
    run = workdir / "results" / "ci" / "stage1"
    with ThreadPoolExecutor(max_workers=1) as pool:
        profile = pool.submit(run_profile, workdir, env, "results/ci/stage1/final-checkpoint")
        told_at = end_legs_by_events(state, run, env, ended_legs, steps_per_leg, profile)
        result = profile.result()
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n{rule_logs(run.parent)}"

    trained = legs(run)
    assert len(told_at) == ended_legs and len(trained) == ended_legs + 1, (told_at, trained)
    assert trained[-1] == (trained[-1][0], max_steps, "finished")
    for (_, last, status), (first, _, _) in zip(trained, trained[1:], strict=False):
        assert status == "preempted" and first == last  # each leg resumed where the last one checkpointed
    for (first, last, _), step in zip(trained, told_at, strict=False):
        assert last >= step >= first + steps_per_leg  # the leg trained on until the signal came
    (job,) = [info for info in submitted_jobs(state) if info["options"]["comment"] == "rule_train_stage1"]
    calls = (state / "calls.log").read_text()
    assert calls.count(f"scontrol requeue {job['id']}") == ended_legs  # one job, requeued after each such leg
    assert calls.count(f"fake-timeout {job['id']}") == ended_legs
    assert (run / "final-checkpoint" / "model.safetensors").is_file()
    assert f"state {job['id']} TIMEOUT" not in calls  # every leg ended before the limit


def submit_one_node_training(state: Path, env: dict, workdir: Path, corpus_args: list[str], out: Path) -> str:
    """A 1-node training job as the workflow's rule makes one: the executor's one-task step whose task does not
    pass signals on (Snakemake there; a shell here), and inside it `srun --overlap ... tsm launch`."""
    launch = shlex.join(["srun", "--overlap", "--ntasks=1", "--cpus-per-task=3", "tsm", "launch", "--nodes", "1",
                         "--cpu", "--gpus-per-node", "2", "--cpu-threads-per-process", "1", "--requeue", "--",
                         *corpus_args, "--output-dir", str(out)])
    task = f"trap 'echo task: TERM, waiting' TERM; {launch}"
    script = f"#!/bin/sh\nsrun -n1 --cpus-per-task=3 sh -c {shlex.quote(task)}\n"
    (workdir / "train.sh").write_text(script)
    submitted = subprocess.run(["sbatch", "--parsable", "--requeue", "--nodes=1", "--time=30", "--exclusive",
                                "--output", str(workdir / "job-%j.out"), str(workdir / "train.sh")],
                               env=env, cwd=workdir, capture_output=True, text=True, check=True)
    return submitted.stdout.strip()


def job_state(job_id: str, env: dict) -> str:
    out = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--format=JobIdRaw,State", "-j", job_id],
                         env=env, capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1].split("|")[1].split()[0]


def wait_for(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s; job output:\n"
                                 f"{log.read_text()[-3000:] if log.exists() else '(none)'}")
        time.sleep(0.5)


@pytest.mark.parametrize(("mode", "slowdown"), [("requeue", 1.0), ("cancel", 1.0), ("requeue", MACHINE_SPEEDS[-1])],
                         ids=lambda value: machine(value) if isinstance(value, float) else value)
def test_a_preempted_training_comes_back_and_completes(cluster, corpus_for_jobs, mode, slowdown):
    """Preemption with a 60 s grace time, at the third step (an event): the signal reaches the step's task,
    `tsm launch`, which has the ranks checkpoint. PreemptMode=REQUEUE brings the job back by itself; with
    CANCEL the job would stay PREEMPTED (the executor plugin then waits forever) but tsm's own requeue after
    the checkpoint brings it back. The grace time is the one budget in real seconds, as on a cluster: the job
    comes back as soon as the checkpoint is written, however long or short that takes."""
    workdir, state, env = cluster
    env.update(machine_speed_env(env, slowdown))
    env.update({"FAKE_SLURM_GRACE_TIME": "60", "FAKE_SLURM_PREEMPT_MODE": mode})
    out = workdir / "run"
    job = submit_one_node_training(state, env, workdir, [*corpus_for_jobs, "--max-steps", "12"], out)
    log = workdir / f"job-{job}.out"
    training_log = out / "training.log"
    wait_for(lambda: training_log.exists() and "Step 3/12" in training_log.read_text(), 300,
             "no third step", log)
    subprocess.run(["fake-preempt", job], env=env, check=True)
    wait_for(lambda: job_state(job, env) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 600,
             "the job did not end", log)
    assert job_state(job, env) == "COMPLETED", log.read_text()[-3000:]
    trained = legs(out)
    assert len(trained) == 2 and trained[0][2] == "preempted" and trained[0][1] >= 3, trained
    assert trained[1] == (trained[0][1], 12, "finished")  # resumed from the preemption's checkpoint
    assert (out / f"checkpoint-{trained[0][1]}" / "model.safetensors").is_file()
    st = json.loads((state / f"{job}.state").read_text())
    assert st.get("restarts", st.get("restart_count")) == 1, st


@pytest.fixture
def corpus_for_jobs(tmp_path: Path) -> list[str]:
    """`tsm train` arguments: the test config on 200 synthetic series, steps of about a second."""
    data = tmp_path / "corpus"
    subprocess.run([sys.executable, "-m", "tsm.cli", "data", "synth", "--output", str(data), "--kind", "mix",
                    "--num-series", "200", "--min-length", "600", "--max-length", "1200", "--seed", "0"],
                   check=True, capture_output=True)
    settings = [f"training_data_paths=[{data}]", "probability=null",
                *(f"{key}={value}" for key, value in SLOW_STEPS.items())]
    return ["--config", "config/training/chronos2-test.yaml", *(a for s in settings for a in ("--set", s))]


def test_a_run_that_makes_no_progress_stops_after_the_retries(cluster):
    """A learning rate that blows the weights up: every step after the first is non-finite, the trainer stops
    at the bad-step limit before any checkpoint. No leg makes progress, so nothing is requeued: the workflow's
    retries bound the attempts, and the log names the step the run is stuck at."""
    workdir, state, env = cluster
    env["TSM_SLURM_NODES"] = "1"
    stage1_only(workdir, max_steps=50, save_steps=20, log_steps=1, learning_rate=1.0e30, warmup_ratio=0.0,
                max_consecutive_bad_steps=2, context_length=128, **{
                    "model.d_model": 64, "model.d_ff": 128, "model.d_kv": 16})
    result = run_profile(workdir, env, "results/ci/stage1/final-checkpoint", retries=2)
    assert result.returncode != 0
    attempts = [info for info in submitted_jobs(state) if info["options"]["comment"] == "rule_train_stage1"]
    assert len(attempts) == 3  # the first try and two retries, then the workflow stops
    calls = (state / "calls.log").read_text()
    assert "scontrol requeue" not in calls
    log = (workdir / "results" / "ci" / "logs" / "train_stage1.log").read_text()
    assert "stuck at step 0: this leg made no progress" in log, log[-3000:]
