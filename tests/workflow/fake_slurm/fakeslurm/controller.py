"""The controller of one job: what slurmctld (src/slurmctld/job_mgr.c: job_time_limit, the time limit and
--signal's warning; src/slurmctld/job_scheduler.c and preempt.c: requeue and preemption with GraceTime) and
slurmd/slurmstepd (src/slurmd/slurmd/req.c: _rpc_terminate_job, _rpc_timelimit; src/slurmd/slurmstepd/req.c,
mgr.c) do to it: run the batch script (again after each requeue), signal its processes, end it after KillWait,
and record its final state."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .parsers import expand
from .procs import (
    descendants,
    exit_field,
    exited_children,
    kill,
    members,
    processes,
    set_subreaper,
    start_time,
    status_code,
)
from .settings import ENTRY, KILL_WAIT, REQUEUE_DELAY, SECONDS_PER_MINUTE, SIGNAL_CHILDREN, STATE, TICK
from .state import accounting_record, cancel, job, job_file, locked, log_call, now_str, read_state
from .steps import steps


class Controller:
    """The job: runs its batch script (again after each requeue) and does what slurmctld and slurmstepd do to
    it (time limit, --signal, scancel, scontrol requeue, preemption), then records its final state."""

    def __init__(self, job_id: str):
        self.id = job_id
        self.info = job(job_id)
        self.pending_cancel = False

    def log(self, line: str, at: float | None = None) -> None:
        """Into calls.log, and with its time into J.controller.log (this process's output): tests read when
        an event came from there, after the fact, instead of timing it themselves. `at`: when it happened, if
        before this loop noticed it (a preemption is requested by another process; its grace counts from then)."""
        log_call(line)
        print(f"{time.time() if at is None else at:.3f} {line}", flush=True)

    def main(self) -> int:
        set_subreaper()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # killpg(pid) of J.json: like scancel
            signal.signal(sig, lambda signum, frame: setattr(self, "pending_cancel", True))
        while True:
            if not self.wait_eligible():
                return 0
            if self.run_once() != "requeue":
                return 0

    def wait_eligible(self) -> bool:
        while True:
            if self.pending_cancel:
                with locked(self.id) as st:
                    cancel(self.id, st, os.getuid())
            st = read_state(self.id)
            if st["state"] != "PENDING":
                return False
            if time.time() >= st.get("eligible", 0):
                return True
            time.sleep(TICK)

    # -- the processes of the job
    def step_list(self, table: dict) -> list[dict]:
        return steps(self.id, table)

    def batch_procs(self, table: dict, step_list: list[dict]) -> set[int]:
        in_steps = set().union(*(s["procs"] for s in step_list)) if step_list else set()
        found = descendants(table, {os.getpid()})
        if self.shell_pid:
            found |= members(table, {self.shell_pid: self.shell_started})
        return found - in_steps - {os.getpid()}

    def job_procs(self) -> set[int]:
        table = processes()
        step_list = self.step_list(table)
        return self.batch_procs(table, step_list).union(*(s["procs"] for s in step_list))

    def deliver(self, sig: int, target: str) -> None:
        """target: steps (their tasks), batch (the batch shell), all (both), batch-shell (kill(pid) of the
        shell, --signal=B: and scancel -b), full (the shell's process group and the steps: scancel -f).
        SIGKILL, and with FAKE_SLURM_SIGNAL_CHILDREN every signal, reaches every process instead."""
        table = processes()
        step_list = self.step_list(table)
        everything = sig == signal.SIGKILL or SIGNAL_CHILDREN
        shell_alive = self.shell_pid and self.shell_status is None
        pids: set[int] = set()
        if target in ("steps", "all", "full"):
            for s in step_list:
                pids |= s["procs"] if everything else s["tasks"]
        if target in ("batch", "all"):
            pids |= self.batch_procs(table, step_list) if everything else ({self.shell_pid} if shell_alive else set())
        if target == "batch-shell" and shell_alive:
            pids.add(self.shell_pid)
        if target == "full" and shell_alive:
            pids |= {pid for pid, (_pp, pgid, _sid, _st) in table.items() if pgid == self.shell_pid}
        kill(pids, sig)
        self.log(f"signal {self.id} {signal.Signals(sig).name} {target}")

    def message(self, reason: str) -> None:
        """What each slurmstepd of the job prints into the output when the job is ended."""
        when = now_str()
        table = processes()
        lines = [f"slurmstepd: error: *** JOB {self.id} ON {expand(self.info['nodelist'])[0]} CANCELLED AT "
                 f"{when}{reason} ***"]
        for s in self.step_list(table):
            if s["tasks"]:
                lines += [f"slurmstepd: error: *** STEP {self.id}.{s['step']} ON {host} CANCELLED AT {when}{reason} ***"
                          for host in s["hosts"]]
        os.write(self.out_fd, ("\n".join(lines) + "\n").encode())

    # -- one run of the batch script
    def run_once(self) -> str:
        info = self.info
        for stale in job_file(self.id, ".steps").glob("*.json"):
            stale.unlink(missing_ok=True)
        job_file(self.id, ".nextstep").unlink(missing_ok=True)
        now = time.time()
        limit = info["time_limit"] * SECONDS_PER_MINUTE if info["time_limit"] else None
        with locked(self.id) as st:
            st.update(state="RUNNING", sacct="RUNNING", start=now, end=now + limit if limit else None,
                      finished=None, exit=None, requeue=False, why=None, final=None, preempt=None,
                      requests=[], reason="None", time_up=None)
            restarts = st.get("restarts", 0)
        self.log(f"state {self.id} RUNNING restarts={restarts}", at=now)  # the limit counts from now
        end = now + limit if limit else None
        env = json.loads(job_file(self.id, ".env.json").read_text())
        env["SLURM_RESTART_COUNT"] = str(restarts)
        env["SLURM_JOB_START_TIME"] = str(int(now))
        if end:
            env["SLURM_JOB_END_TIME"] = str(int(end))
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if info["open_mode"] == "append" else os.O_TRUNC)
        workdir = Path(info["workdir"])
        self.out_fd = os.open(info["output"], flags, 0o644)
        err_fd = os.open(info["error"], flags, 0o644) if info.get("error") else self.out_fd
        try:
            shell = subprocess.Popen([str(job_file(self.id, ".sh")), *info.get("script_args", [])], cwd=workdir,
                                     env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=self.out_fd, stderr=err_fd)
        except OSError as exc:
            os.write(self.out_fd, f"slurmstepd: error: execve(): {exc}\n".encode())
            shell = None
        if err_fd != self.out_fd:
            os.close(err_fd)
        self.shell_pid = shell.pid if shell else None
        self.shell_started = start_time(shell.pid) if shell else None
        self.shell_status = None if shell else 127 << 8
        with locked(self.id) as st:
            st["batch_pid"] = self.shell_pid
        try:
            return self.supervise(shell, end)
        finally:
            os.close(self.out_fd)

    def reap(self, shell) -> None:
        for pid, status in exited_children():
            if shell is not None and pid == shell.pid:
                shell.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it
                self.shell_status = status

    def supervise(self, shell, end: float | None) -> str:
        warn = self.info.get("signal")
        warn_seconds = warn["time"] * SECONDS_PER_MINUTE / 60 if warn else 0.0
        warn_at = end - warn_seconds if warn and end else None
        warned = False
        phase = "running"
        kill_at = None
        preempt_started = False
        rc_written = False
        killed_at = None
        while True:
            self.reap(shell)
            now = time.time()
            if self.pending_cancel:
                self.pending_cancel = False
                with locked(self.id) as st:
                    cancel(self.id, st, os.getuid())
            if read_state(self.id).get("requests"):  # scancel --signal
                with locked(self.id) as st:
                    requests, st["requests"] = st.get("requests", []), []
                for request in requests if phase == "running" else []:
                    self.deliver(request["signal"], request["target"])
            st = read_state(self.id)

            if phase == "running":
                time_up = st.get("time_up")  # fake-timeout: the limit is now, the warning's TIME from now
                if time_up is not None and (end is None or time_up + warn_seconds < end):
                    end = time_up + warn_seconds
                    warn_at = None if warned or not warn else time_up
                    self.log(f"time-up {self.id} limit in {warn_seconds:g}s", at=time_up)
                if st["state"] == "COMPLETING":  # scancel, scontrol requeue
                    phase, kill_at = "terminating", self.terminate(st["why"])
                    continue
                if warn_at is not None and now >= warn_at:  # --signal
                    target = "batch-shell" if warn["batch"] else "steps"
                    self.deliver(signal.SIGCONT, target)
                    self.deliver(warn["signal"], target)
                    warn_at, warned = None, True
                preempt = st.get("preempt")
                if preempt and not preempt_started:
                    preempt_started = True
                    self.log(f"preempt {self.id} mode={preempt['mode']} grace={preempt['grace']:g}", at=preempt["at"])
                    if preempt["grace"] > 0:
                        self.deliver(signal.SIGCONT, "steps")
                        self.deliver(signal.SIGTERM, "steps")
                if preempt and (now >= min(end or math.inf, preempt["at"] + preempt["grace"])
                                or self.shell_status is not None):
                    with locked(self.id) as st:
                        if st["state"] == "RUNNING":
                            requeue = preempt["mode"] == "requeue" and self.info["requeue"]
                            st.update(state="COMPLETING", sacct="PREEMPTED", why="preempt", final="PREEMPTED",
                                      requeue=requeue, restarts=st.get("restarts", 0) + requeue)
                            self.log(f"state {self.id} PREEMPTED")
                    continue
                if end is not None and now >= end:
                    with locked(self.id) as st:
                        if st["state"] == "RUNNING":
                            st.update(state="COMPLETING", sacct="TIMEOUT", why="timeout", final="TIMEOUT",
                                      reason="TimeLimit")
                            self.log(f"state {self.id} TIMEOUT")
                    continue
                if self.shell_status is not None:  # the batch script ended by itself
                    final = "COMPLETED" if self.shell_status == 0 else "FAILED"
                    with locked(self.id) as st:
                        if st["state"] != "RUNNING":
                            continue
                        self.write_rc(st)
                        rc_written = True
                        st.update(state="COMPLETING", sacct=final, final=final,
                                  exit=exit_field(self.shell_status),
                                  reason="None" if final == "COMPLETED" else "NonZeroExitCode")
                    self.log(f"state {self.id} {final}")
                    table = processes()
                    step_list = self.step_list(table)
                    kill(self.batch_procs(table, step_list), signal.SIGKILL)  # the batch step's leftovers
                    if any(s["procs"] for s in step_list):  # steps still running: the job's end ends them
                        self.deliver(signal.SIGCONT, "steps")
                        self.deliver(signal.SIGTERM, "steps")
                    phase, kill_at = "terminating", time.time() + KILL_WAIT
                    continue
            else:
                if self.shell_status is not None and not rc_written and not st.get("requeue"):
                    with locked(self.id) as st:
                        if not st.get("requeue"):
                            self.write_rc(st)
                            st["exit"] = st.get("exit") or exit_field(self.shell_status)
                    rc_written = True
                left = self.job_procs()
                if not left and (self.shell_status is not None or shell is None):
                    return self.finish()
                if now >= kill_at:
                    if killed_at is None:
                        killed_at = now
                        self.deliver(signal.SIGKILL, "all")
                    else:
                        kill(left, signal.SIGKILL)
            time.sleep(TICK)

    def terminate(self, why: str) -> float:
        """The job was ended (time limit, scancel, requeue, preemption): what slurmd does, then KillWait."""
        reason = {"timeout": " DUE TO TIME LIMIT", "preempt": " DUE TO PREEMPTION", "requeue": " DUE TO JOB REQUEUE",
                  "cancel": " DUE to SIGNAL Terminated"}[why]
        self.message(reason)
        if why in ("timeout", "preempt"):  # REQUEST_KILL_TIMELIMIT / _PREEMPTED: the steps first
            self.deliver(signal.SIGTERM, "steps")
        self.deliver(signal.SIGCONT, "all")  # then REQUEST_TERMINATE_JOB: every step and the batch script
        self.deliver(signal.SIGTERM, "all")
        return time.time() + KILL_WAIT

    def write_rc(self, st: dict) -> None:
        if not st.get("requeue") and self.shell_status is not None:
            path = job_file(self.id, ".rc")
            path.with_suffix(".rc.tmp").write_text(f"{status_code(self.shell_status)}\n")
            path.with_suffix(".rc.tmp").rename(path)

    def finish(self) -> str:
        with locked(self.id) as st:
            st["batch_pid"] = None
            if st.get("requeue"):  # batch_requeue_fini: pending again, a new accounting record
                st["history"] = st.get("history", []) + [{**accounting_record(st), "finished": time.time(),
                                                          "exit": st.get("exit") or exit_field(self.shell_status)}]
                st.update(state="PENDING", sacct="PENDING", start=None, finished=None, exit=None, requeue=False,
                          eligible=time.time() + REQUEUE_DELAY, why=None, final=None, preempt=None,
                          reason="BeginTime")
                job_file(self.id, ".rc").unlink(missing_ok=True)
                self.log(f"state {self.id} PENDING")
                return "requeue"
            st.update(state=st.get("final") or "COMPLETED", finished=time.time())
            if not st.get("exit"):
                st["exit"] = exit_field(self.shell_status)
        self.log(f"ended {self.id} {st['state']}")
        return "done"


def run_controller(args: list[str]) -> int:
    """`run_command.py _controller J`: the controller of job J, in its own session (start_controller)."""
    return Controller(args[0]).main()

def start_controller(job_id: str) -> int:
    """Start job J's controller in a session of its own; its pid goes into J.json (scancel's killpg target)."""
    with open(job_file(job_id, ".controller.log"), "a") as log:
        proc = subprocess.Popen([sys.executable, str(ENTRY), "_controller", job_id], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=STATE)
    return proc.pid

