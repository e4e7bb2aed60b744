"""The fake SLURM (fake_slurm/) does to a job what real SLURM does where users get hurt: the time limit
(TIMEOUT, SIGTERM, SIGKILL KillWait later), --signal before the limit (the steps' tasks, or with B: the batch
shell), the end of a step (what its tasks left is killed), preemption with GraceTime (requeue or cancel),
`scontrol requeue`, and the states that sacct and squeue show the executor plugin. Jobs are shell scripts and
small python tasks. The tests wait on events (a file, a state, a line of the controller's log), never on the clock:
`fake-timeout` makes a job's time come up when the test says so, and only the test of the timer itself runs one
SLURM minute in seconds (FAKE_SLURM_SECONDS_PER_MINUTE), checking no more than that nothing came early. Every
test but the parsers' starts fake jobs: marked e2e."""

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.workflow.fake_slurm.fakeslurm import parsers

FAKE_SLURM = Path(__file__).resolve().parent / "fake_slurm"

# A step's task: records its start and every signal it gets (with the time) in REC, beats into NAME.beat,
# and lives until killed, unless told otherwise.
TASK = r"""
import os, signal, subprocess, sys, time
rec, name, args = sys.argv[1], sys.argv[2], sys.argv[3:]
def note(text):
    with open(rec, "a") as f:
        f.write(f"{name} {text} {time.time():.3f}\n")
def handler(signum, frame):
    note(signal.Signals(signum).name)
    if "--exit-on-signal" in args:
        sys.exit(int(args[args.index("--exit-on-signal") + 1]))
for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
    signal.signal(sig, handler)
if "--child" in args:  # a child in a session of its own
    child = subprocess.Popen([sys.executable, __file__, rec, "child"], start_new_session=True)
    with open(f"{name}.children", "a") as f:
        f.write(f"{child.pid}\n")
if "--leave" in args:  # a background child in the task's session, and a daemon (double fork + setsid)
    sleeper = subprocess.Popen(["sleep", "60"])
    with open(f"{name}.children", "a") as f:
        f.write(f"{sleeper.pid}\n")
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open(f"{name}.children", "a") as f:
                f.write(f"{os.getpid()}\n")
            os.execvp("sleep", ["sleep", "61"])
        os._exit(0)
    os.wait()
    while len(open(f"{name}.children").read().split()) < 2:
        time.sleep(0.01)
    sys.exit(0)
note(f"start pid={os.getpid()}")
open(f"{name}.ready", "w").close()
while not ("--stop-file" in args and os.path.exists(args[args.index("--stop-file") + 1])):
    with open(f"{name}.beat.tmp", "w") as f:  # replaced whole: a SIGKILL never leaves an empty beat behind
        f.write(f"{time.time():.3f}")
    os.replace(f"{name}.beat.tmp", f"{name}.beat")
    time.sleep(0.05)
note("stopped")
"""


class FakeCluster:
    def __init__(self, tmp_path: Path):
        self.dir = tmp_path
        self.state = tmp_path / "slurm"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "FAKE_SLURM"))}
        env.update({"PATH": f"{FAKE_SLURM}{os.pathsep}{env['PATH']}", "FAKE_SLURM_STATE": str(self.state),
                    "FAKE_SLURM_KILL_WAIT": "1",
                    "FAKE_SLURM_REQUEUE_DELAY": "0.3", "FAKE_SLURM_GRACE_TIME": "1"})
        self.env = env
        (tmp_path / "task.py").write_text(TASK)
        self.count = 0

    def run(self, *cmd: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(cmd, cwd=self.dir, env={**self.env, **env}, capture_output=True, text=True,
                                timeout=120)
        if check and result.returncode:
            pytest.fail(f"{cmd} failed ({result.returncode}): {result.stderr}")
        return result

    def sbatch(self, script: str, *options: str, **env: str) -> str:
        self.count += 1
        path = self.dir / f"job{self.count}.sh"
        path.write_text("#!/bin/sh\n" + script)
        return self.run("sbatch", "--parsable", *options, str(path), **env).stdout.strip()

    def info(self, job: str) -> dict:
        return json.loads((self.state / f"{job}.state").read_text())

    def wait_for(self, condition, timeout: float = 120, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what or condition}")
            time.sleep(0.05)

    def wait(self, job: str, timeout: float = 120) -> list[tuple[int, bool]]:
        """Until the job is over; (restarts, .rc exists) as seen on the way."""
        seen = []

        def over() -> bool:
            info = self.info(job)
            seen.append((info.get("restarts", 0), (self.state / f"{job}.rc").exists()))
            return info["state"] not in ("PENDING", "RUNNING", "COMPLETING")

        self.wait_for(over, timeout, f"job {job} to end")
        return seen

    def sacct(self, job: str, *more: str) -> list[str]:
        out = self.run("sacct", "-X", "--parsable2", "--noheader", "--format=JobIdRaw,State", "-j", job, *more)
        return out.stdout.splitlines()

    def squeue(self, job: str) -> str:
        return self.run("squeue", "--format=%i|%T", "--states=all", "--noheader", "-j", job).stdout.strip()

    def output(self, job: str) -> str:
        return (self.dir / f"slurm-{job}.out").read_text()

    def calls(self, job: str) -> list[str]:
        return [c for c in (self.state / "calls.log").read_text().splitlines()
                if c.split()[1:2] == [job] and c.split()[0] in ("state", "signal", "preempt", "ended", "srun")]

    def events(self, job: str) -> list[tuple[float, str]]:
        """(time, event) as the job's controller logged them when it acted: the state changes and signals."""
        lines = (self.state / f"{job}.controller.log").read_text().splitlines()
        return [(float(when), event) for when, _, event in (line.partition(" ") for line in lines)
                if when.replace(".", "", 1).isdigit()]

    def event_time(self, job: str, event: str) -> float:
        """When the controller logged `event` (the first time)."""
        times = [when for when, logged in self.events(job) if logged == event or logged.startswith(event + " ")]
        assert times, f"no {event!r} in {self.events(job)}"
        return times[0]

    def time_up_when_ready(self, job: str, ready: str = "task.ready") -> None:
        """Once the step's task runs, the job's time is up (fake-timeout): the event, not the clock, decides."""
        self.wait_for(lambda: (self.dir / ready).exists(), what="the step")
        self.run("fake-timeout", job)

    def records(self, name: str = "") -> list[list[str]]:
        path = self.dir / "rec"
        lines = path.read_text().splitlines() if path.exists() else []
        return [line.split() for line in lines if line.startswith(name)]

    def cleanup(self) -> list[str]:
        """Cancel what still runs, wait for every job's controller; then kill and name any process left."""
        for path in self.state.glob("*.json"):
            if path.stem.isdigit() and self.info(path.stem)["state"] in ("PENDING", "RUNNING", "COMPLETING"):
                self.run("scancel", path.stem, check=False)
        controllers = [json.loads(p.read_text())["pid"] for p in self.state.glob("*.json") if p.stem.isdigit()]
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in controllers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = []
        marker = f"FAKE_SLURM_STATE={self.state}".encode()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in environ and _alive(int(pid)):
                left.append(f"{pid} {cmdline}")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        return left


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


@pytest.fixture
def fake(tmp_path):
    fake = FakeCluster(tmp_path)
    yield fake
    left = fake.cleanup()
    assert not left, f"processes left behind: {left}"


def test_slurm_time_signal_and_script_parsers():
    minutes = parsers.time_minutes
    assert [minutes(t) for t in ("30", "1:30", "1:00", "2:00:00", "1:00:01", "1-0", "1-2", "1-2:30", "1-0:0:1")] == [
        30, 2, 1, 120, 61, 1440, 1560, 1590, 1441]
    assert [minutes(t) for t in ("0", "-1", "UNLIMITED", "infinite")] == [None] * 4
    for bad in ("", "1h", "1:2:3:4", "1-2-3", "1-2:3:4:5", "a", "1:30:"):
        with pytest.raises(ValueError):
            minutes(bad)
    parse = parsers.parse_signal
    assert parse("TERM@300") == {"signal": signal.SIGTERM, "time": 300, "batch": False}
    assert parse("B:USR1@90") == {"signal": signal.SIGUSR1, "time": 90, "batch": True}
    assert parse("R:SIGUSR2") == {"signal": signal.SIGUSR2, "time": 60, "batch": False}
    assert parse("10") == {"signal": 10, "time": 60, "batch": False}
    for bad in ("FOO", "TERM@x", "TERM@70000", "0@5", "B:"):
        with pytest.raises(ValueError):
            parse(bad)
    script = "#!/bin/sh\n#SBATCH -t 5 --job-name='a b'  # comment\n\n# note\n  #SBATCH --ignored\necho\n#SBATCH -N 2\n"
    assert parsers.directives(script) == ["-t", "5", "--job-name=a b"]
    assert parsers.expand("n[08-10],gpu1,127.0.0.[1-2]") == ["n08", "n09", "n10", "gpu1", "127.0.0.1", "127.0.0.2"]
    assert parsers.parse(["-N2", "-t", "5", "--signal=TERM@1", "--parsable", "x.sh", "-n", "3"], "sbatch") == (
        {"nodes": "2", "time": "5", "signal": "TERM@1", "parsable": "1"}, ["x.sh", "-n", "3"])


@pytest.mark.e2e
def test_sbatch_is_as_strict_as_the_real_one(fake):
    for options, error in ((["--foo=1"], "unrecognized option '--foo'"), (["-t", "1h"], "Invalid --time"),
                           (["--signal=FOO@10"], "Invalid --signal"), (["--nodes=two"], "Invalid numeric value")):
        result = fake.run("sbatch", "--wrap=true", *options, check=False)
        assert result.returncode == 1 and error in result.stderr, result.stderr
    (fake.dir / "noshebang.sh").write_text("echo hi\n")
    result = fake.run("sbatch", "noshebang.sh", check=False)
    assert result.returncode == 1 and "does not look like a batch script" in result.stderr
    # #SBATCH lines count (before the first command); the command line wins over them
    job = fake.sbatch("#SBATCH --job-name=from-script -t 2:00:00 --comment=x\necho $SLURM_JOB_NAME\n",
                         "--comment=y")
    fake.wait(job)
    info = json.loads((fake.state / f"{job}.json").read_text())
    assert info["name"] == "from-script" and info["time_limit"] == 120 and info["options"]["comment"] == "y"
    assert fake.output(job) == "from-script\n"


@pytest.mark.e2e
@pytest.mark.parametrize("nodes", [1, 2])
def test_job_geometry_and_a_step_per_node(fake, nodes):
    job = fake.sbatch('echo "nodes $SLURM_JOB_NODELIST $SLURM_NNODES"\nscontrol show hostnames\n'
                         'srun sh -c \'echo "task $SLURM_PROCID node $SLURM_NODEID $SLURMD_NODENAME"\' | sort\n',
                         f"--nodes={nodes}", "--ntasks-per-node=1")
    fake.wait(job)
    hosts = [f"127.0.0.{n}" for n in range(1, nodes + 1)]
    assert fake.output(job).splitlines() == [
        f"nodes {parsers.hostlist(nodes)} {nodes}", *hosts,
        *(f"task {n} node {n} {host}" for n, host in enumerate(hosts))]
    assert fake.sacct(job) == [f"{job}|COMPLETED"] and fake.squeue(job) == f"{job}|COMPLETED"
    assert (fake.state / f"{job}.rc").read_text() == "0\n"
    assert f"srun {job} 0 ntasks={nodes} nodes={nodes}" in "\n".join(fake.calls(job))


@pytest.mark.e2e
def test_time_limit_ends_the_job_timeout_sigterm_then_sigkill_after_killwait(fake):
    # The timer itself: one SLURM minute = 2 s, KillWait 1.5 s; the step's task traps SIGTERM and goes on, so the
    # job does nothing but wait for the limit. Only lower bounds on the controller's own times: a slower machine
    # delays each event (never brings it earlier), a faster one changes nothing.
    job = fake.sbatch("srun python3 task.py rec task\necho not reached\n", "-t", "1",
                      FAKE_SLURM_SECONDS_PER_MINUTE="2", FAKE_SLURM_KILL_WAIT="1.5")
    fake.wait(job)
    started = fake.event_time(job, f"state {job} RUNNING")
    assert fake.event_time(job, f"state {job} TIMEOUT") >= started + 2  # -t 1, a minute of 2 s
    assert fake.event_time(job, f"signal {job} SIGKILL all") >= fake.event_time(job, f"signal {job} SIGTERM all") + 1.5
    assert fake.records("task SIGTERM")
    assert "stopped" not in (fake.dir / "rec").read_text()
    assert fake.sacct(job) == [f"{job}|TIMEOUT"] and fake.squeue(job) == f"{job}|TIMEOUT"
    assert f"*** JOB {job} ON 127.0.0.1 CANCELLED AT" in fake.output(job)
    assert "DUE TO TIME LIMIT ***" in fake.output(job) and "not reached" not in fake.output(job)
    assert (fake.state / f"{job}.rc").read_text() == "143\n"  # the batch shell got SIGTERM too
    calls = fake.calls(job)
    assert calls.index(f"state {job} TIMEOUT") < calls.index(f"signal {job} SIGTERM steps") < calls.index(
        f"signal {job} SIGTERM all") < calls.index(f"signal {job} SIGKILL all")


@pytest.mark.e2e
@pytest.mark.parametrize("signal_children", [False, True])
def test_warning_signal_reaches_the_steps_tasks_before_the_limit_not_the_batch_shell(fake, signal_children):
    # --signal=TERM@30: the time is up once the task runs (fake-timeout), so the warning goes out then and the
    # limit would come 30 s later. The task ends on it; its child (own session) gets the signal only with
    # SignalChildrenProcesses=yes, and is killed when the task has exited.
    script = ("trap 'echo \"batch SIGTERM\" >> rec' TERM\n"
              "srun python3 task.py rec task --child --exit-on-signal 0 &\nwait\nwait\n")
    job = fake.sbatch(script, "-t", "1", "--signal=TERM@30", FAKE_SLURM_SIGNAL_CHILDREN=str(int(signal_children)))
    fake.time_up_when_ready(job)
    fake.wait(job)
    terms = fake.records("task SIGTERM")
    assert len(terms) == 1 and float(terms[0][2]) >= fake.event_time(job, f"time-up {job}"), terms
    assert f"time-up {job} limit in 30s" in [event for _, event in fake.events(job)]
    assert not fake.records("batch")
    assert bool(fake.records("child SIGTERM")) == signal_children
    child = int((fake.dir / "task.children").read_text())
    assert not _alive(child)
    assert fake.sacct(job) == [f"{job}|COMPLETED"]  # ended before its limit
    assert f"signal {job} SIGTERM steps" in fake.calls(job)


@pytest.mark.e2e
def test_a_shell_task_takes_the_warning_signal_and_the_command_it_runs_dies_with_the_step(fake):
    # as in the jobstep plugin's `srun -n1 ... sh -s`: the signal reaches the task, the shell, which dies of it
    # without passing it on; the step's end then kills the command the shell ran, which never saw a SIGTERM
    job = fake.sbatch("echo 'python3 task.py rec task' | srun sh -s\n", "-t", "1", "--signal=TERM@30")
    fake.time_up_when_ready(job)
    fake.wait(job)
    assert fake.records("task start") and not fake.records("task SIGTERM")
    calls = fake.calls(job)  # killed at the warning, long before the limit
    assert f"signal {job} SIGTERM steps" in calls and f"state {job} TIMEOUT" not in calls
    assert "srun: error: 127.0.0.1: task 0: Terminated" in fake.output(job)
    assert fake.sacct(job) == [f"{job}|FAILED"] and (fake.state / f"{job}.rc").read_text() == "143\n"


@pytest.mark.e2e
def test_warning_signal_with_b_reaches_only_the_batch_shell(fake):
    # the shell handles it once `wait` returns: with the step in the foreground it would wait for the step
    script = ("trap 'echo \"batch SIGUSR1 $(date +%s.%N)\" >> rec; touch stop' USR1\n"
              "srun python3 task.py rec task --stop-file stop &\nwait\nwait\n")
    job = fake.sbatch(script, "-t", "1", "--signal=B:USR1@30")
    fake.time_up_when_ready(job)
    fake.wait(job)
    batch = fake.records("batch SIGUSR1")
    assert len(batch) == 1 and float(batch[0][2]) >= fake.event_time(job, f"time-up {job}")
    assert not fake.records("task SIGUSR1") and fake.records("task stopped")
    assert fake.sacct(job) == [f"{job}|COMPLETED"]
    assert f"signal {job} SIGUSR1 batch-shell" in fake.calls(job)


@pytest.mark.e2e
def test_the_end_of_a_step_kills_what_its_task_left(fake):
    script = ("srun python3 task.py rec task --leave\n"
              'for pid in $(cat task.children); do kill -0 $pid 2>/dev/null && echo "alive $pid" || echo dead; done\n')
    job = fake.sbatch(script)
    fake.wait(job)
    children = (fake.dir / "task.children").read_text().split()
    assert len(children) == 2  # the background sleep and the daemon
    assert fake.output(job).splitlines() == ["dead", "dead"]
    assert fake.sacct(job) == [f"{job}|COMPLETED"]


@pytest.mark.e2e
def test_preemption_with_requeue_runs_the_batch_script_again(fake):
    script = ("trap 'echo \"batch SIGTERM\" >> rec' TERM\necho \"run $SLURM_RESTART_COUNT\" >> runs\n"
              "echo \"output of run $SLURM_RESTART_COUNT\"\n"
              '[ "$SLURM_RESTART_COUNT" = 0 ] || exit 0\n'
              "srun python3 task.py rec task --exit-on-signal 75 &\nwait\nwait\necho \"step exit $?\"\n")
    job = fake.sbatch(script)
    fake.wait_for(lambda: (fake.dir / "task.ready").exists(), what="the step")
    fake.run("fake-preempt", job, FAKE_SLURM_PREEMPT_MODE="requeue")
    seen = fake.wait(job)
    assert (fake.dir / "runs").read_text() == "run 0\nrun 1\n"
    assert fake.records("task SIGTERM") and not fake.records("batch")  # the grace SIGTERM: steps only
    assert fake.output(job) == "output of run 1\n"  # truncated when the script runs again
    assert fake.sacct(job) == [f"{job}|COMPLETED"]
    assert fake.sacct(job, "--duplicates") == [f"{job}|PREEMPTED", f"{job}|COMPLETED"]
    assert (fake.state / f"{job}.rc").read_text() == "0\n"
    assert not [rc for restarts, rc in seen if restarts == 0 and rc], "the preempted run wrote an .rc"
    calls = fake.calls(job)
    assert calls.index(f"state {job} PREEMPTED") < calls.index(f"state {job} PENDING") < calls.index(
        f"state {job} RUNNING restarts=1") < calls.index(f"ended {job} COMPLETED")


@pytest.mark.e2e
def test_preemption_with_cancel_ends_preempted(fake):
    # the task ignores SIGTERM: SIGTERM at preemption, again when the grace time (1 s) is over, SIGKILL
    # KillWait (1 s) later; lower bounds on the controller's times only (a slow machine delays, never hastens)
    job = fake.sbatch("srun python3 task.py rec task\n")
    fake.wait_for(lambda: (fake.dir / "task.ready").exists(), what="the step")
    fake.run("fake-preempt", job, FAKE_SLURM_PREEMPT_MODE="cancel")
    fake.wait(job)
    assert len(fake.records("task SIGTERM")) >= 2
    preempted = fake.event_time(job, f"preempt {job} mode=cancel grace=1")
    grace_over = fake.event_time(job, f"signal {job} SIGTERM all")
    assert preempted <= fake.event_time(job, f"signal {job} SIGTERM steps") < grace_over
    assert grace_over >= preempted + 1 and fake.event_time(job, f"signal {job} SIGKILL all") >= grace_over + 1
    assert fake.sacct(job) == [f"{job}|PREEMPTED"] and fake.squeue(job) == f"{job}|PREEMPTED"
    assert "DUE TO PREEMPTION ***" in fake.output(job)
    assert (fake.state / f"{job}.rc").exists()
    result = fake.run("fake-preempt", job, check=False)
    assert result.returncode == 1 and "not running" in result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize(("options", "requeue_default", "allowed"), [
    ([], "1", True), (["--no-requeue"], "1", False), ([], "0", False), (["--requeue"], "0", True),
    (["--open-mode=append"], "1", True)])
def test_scontrol_requeue_from_inside_the_job(fake, options, requeue_default, allowed):
    script = ('echo "run $SLURM_RESTART_COUNT" >> runs\n[ "$SLURM_RESTART_COUNT" = 0 ] || exit 0\n'
              'if scontrol requeue "$SLURM_JOB_ID" 2> err; then sleep 10; echo "not killed" >> runs\n'
              'else echo refused >> runs; fi\n')
    job = fake.sbatch(script, *options, FAKE_SLURM_REQUEUE_DEFAULT=requeue_default)
    seen = fake.wait(job)
    assert fake.sacct(job) == [f"{job}|COMPLETED"]
    assert (fake.state / f"{job}.rc").read_text() == "0\n"
    if allowed:
        assert (fake.dir / "runs").read_text() == "run 0\nrun 1\n"
        assert fake.sacct(job, "-D") == [f"{job}|REQUEUED", f"{job}|COMPLETED"]
        # the second run truncates the output, unless --open-mode=append
        assert ("DUE TO JOB REQUEUE ***" in fake.output(job)) == ("--open-mode=append" in options)
        assert not [rc for restarts, rc in seen if restarts == 0 and rc]
        shown = fake.run("scontrol", "show", "job", job).stdout
        assert "JobState=COMPLETED" in shown and "Requeue=1 Restarts=1" in shown
    else:
        assert (fake.dir / "runs").read_text() == "run 0\nrefused\n"
        assert (fake.dir / "err").read_text() == f"Requested operation is presently disabled for job {job}\n"


@pytest.mark.e2e
def test_scancel_and_what_the_plugin_reads_from_sacct_and_squeue(fake, monkeypatch):
    from snakemake_executor_plugin_slurm.job_status_query import (
        query_job_status,
        query_job_status_sacct,
        query_job_status_squeue,
    )

    run = "5f3c-run-uuid"
    done = fake.sbatch("exit 0\n", f"--job-name={run}")
    failed = fake.sbatch("exit 3\n", f"--job-name={run}")
    timeout = fake.sbatch("sleep 30\n", f"--job-name={run}", "-t", "1", FAKE_SLURM_SECONDS_PER_MINUTE="0.5")
    cancelled = fake.sbatch("srun python3 task.py rec task\n", f"--job-name={run}")
    preempted = fake.sbatch("sleep 30\n", f"--job-name={run}")
    running = fake.sbatch("sleep 30\n", f"--job-name={run}")
    other = fake.sbatch("exit 0\n", "--job-name=other-run")
    fake.wait_for(lambda: (fake.dir / "task.ready").exists(), what="the step")
    fake.run("scancel", cancelled)
    fake.run("fake-preempt", preempted, FAKE_SLURM_PREEMPT_MODE="cancel", FAKE_SLURM_GRACE_TIME="0")
    for job in (done, failed, timeout, cancelled, preempted, other):
        fake.wait(job)
    assert fake.records("task SIGTERM")  # scancel: SIGTERM first
    for name, value in fake.env.items():
        monkeypatch.setenv(name, value)
    logger = logging.getLogger("test")
    by_sacct, _ = asyncio.run(query_job_status(query_job_status_sacct(run), logger))
    by_squeue, _ = asyncio.run(query_job_status(query_job_status_squeue(run), logger))
    uid = os.getuid()
    assert by_sacct == {done: "COMPLETED", failed: "FAILED", timeout: "TIMEOUT", cancelled: f"CANCELLED by {uid}",
                        preempted: "PREEMPTED", running: "RUNNING"}
    assert by_squeue == {**by_sacct, cancelled: "CANCELLED"}
    assert (fake.state / f"{cancelled}.cancelled").exists()
    result = fake.run("scancel", "999999", check=False)
    assert result.returncode == 1 and "Invalid job id specified" in result.stderr


@pytest.mark.e2e
def test_srun_outside_a_job_or_in_an_ended_one_is_refused(fake):
    result = fake.run("srun", "true", check=False)
    assert result.returncode == 1 and "SLURM_JOB_ID" in result.stderr
    job = fake.sbatch("exit 0\n")
    fake.wait(job)
    result = fake.run("srun", f"--jobid={job}", "true", check=False)
    assert result.returncode == 1 and "Job/step already completing or completed" in result.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
