"""A job step, as srun (src/srun/srun_job.c, src/srun/srun.c; man srun) and each node's slurmstepd
(src/slurmd/slurmstepd/mgr.c, req.c) run one: tasks block-wise over the nodes, KillOnBadExit, the end of a step
killing what its tasks left, srun's handling of SIGINT/SIGTERM. Each running step registers its processes in
J.steps/<step>.json, which the job's controller reads to signal the step's tasks."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from .parsers import error, expand, parse
from .procs import alive, descendants, exited_children, kill, members, processes, set_subreaper, start_time
from .settings import KILL_WAIT, SIGNAL_CHILDREN, TICK, env_flag
from .state import job, job_file, log_call, now_str, read_state, write_json


def steps(job_id: str, table: dict) -> list[dict]:
    """The job's running steps: their srun, task processes (signals other than SIGKILL go to these) and every
    process of the step (the tasks' descendants, sessions and process groups, and srun's orphans)."""
    found = []
    for path in sorted(job_file(job_id, ".steps").glob("*.json")):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            reg = json.loads(path.read_text())
            srun_pid, srun_start = reg["srun"]
            leaders = {pid: start for pid, start, _node, _rank in reg["tasks"]}
            tasks = {pid for pid, start, _node, _rank in reg["tasks"] if alive(table, pid, start)}
            roots = tasks | ({srun_pid} if alive(table, srun_pid, srun_start) else set())
            procs = (descendants(table, roots) | tasks | members(table, leaders)) - {srun_pid, os.getpid()}
            found.append({"step": reg["step"], "srun": srun_pid, "tasks": tasks, "procs": procs,
                          "hosts": reg["hosts"]})
    return found


def srun(args: list[str]) -> int:
    return Step(args).run()


class Step:
    """One job step: tasks spread block-wise over the job's nodes, each with its SLURM_NODEID, SLURM_PROCID and
    SLURM_LOCALID, each in its own session (its "node"). srun plays the client and each node's slurmstepd:
    it waits for all tasks; once one fails the others get SIGTERM and KillWait later SIGKILL (KillOnBadExit);
    once a node's tasks have exited, whatever they left there is SIGKILLed; SIGTERM to srun itself kills the
    step (as the real srun: "forcing job termination")."""

    def __init__(self, args: list[str]):
        self.args = args
        self.opts, self.command = parse(args, "srun")
        self.pending: list[int] = []
        self.node_of: dict[int, int] = {}
        self.forced = False
        self.last_int = 0.0

    def run(self) -> int:
        opts = self.opts
        job_id = opts.get("jobid") or os.environ.get("SLURM_JOB_ID")
        if not job_id:
            return error("srun: error: fake SLURM runs srun only in a job (no SLURM_JOB_ID, no --jobid)")
        if not self.command:
            return error("srun: fatal: No command given to execute.")
        info = job(job_id)
        if read_state(info["id"])["state"] != "RUNNING":
            return error(f"srun: error: Unable to create step for job {info['id']}: "
                          "Job/step already completing or completed")
        self.job_id = info["id"]
        hosts = expand(info["nodelist"])[: int(opts.get("nodes", info["nodes"]))]
        ntasks = int(opts.get("ntasks", len(hosts) * int(opts.get("ntasks-per-node", 1))))
        per_node = -(-ntasks // len(hosts))
        self.step = self._next_step()
        log_call(f"srun {self.job_id} {self.step} ntasks={ntasks} nodes={len(hosts)} {shlex.join(self.args)}")
        kill_on_bad_exit = opts.get("kill-on-bad-exit", "1" if env_flag("FAKE_SLURM_KILL_ON_BAD_EXIT", True)
                                    else "0") not in ("0", "")
        set_subreaper()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                    signal.SIGCONT, signal.SIGALRM):
            signal.signal(sig, lambda signum, frame: self.pending.append(signum))
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: dict[int, int | None] = {}
        self.tasks: list[tuple[int, int, int]] = []  # pid, node, rank
        for rank in range(ntasks):
            node = rank // per_node
            env = {**os.environ, "SLURM_JOB_ID": self.job_id, "SLURM_JOBID": self.job_id,
                   "SLURM_STEP_ID": str(self.step), "SLURM_STEPID": str(self.step),
                   "SLURM_JOB_NODELIST": info["nodelist"], "SLURM_NODELIST": info["nodelist"],
                   "SLURM_JOB_NUM_NODES": str(info["nodes"]), "SLURM_NNODES": str(len(hosts)),
                   "SLURM_STEP_NODELIST": ",".join(hosts), "SLURM_STEP_NUM_NODES": str(len(hosts)),
                   "SLURM_NTASKS": str(ntasks), "SLURM_NPROCS": str(ntasks), "SLURM_STEP_NUM_TASKS": str(ntasks),
                   "SLURM_NODEID": str(node), "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % per_node),
                   "SLURMD_NODENAME": hosts[node]}
            if "cpus-per-task" in opts:
                env["SLURM_CPUS_PER_TASK"] = opts["cpus-per-task"]
            try:
                proc = subprocess.Popen(self.command, env=env, start_new_session=True,
                                        stdin=None if rank == 0 else subprocess.DEVNULL)
            except OSError as exc:
                print(f"slurmstepd: error: execve(): {self.command[0]}: {exc.strerror}", file=sys.stderr)
                self._kill_all(signal.SIGKILL)
                return 2
            self.procs[proc.pid] = proc
            self.started[proc.pid] = start_time(proc.pid)
            self.tasks.append((proc.pid, node, rank))
            self.node_of[proc.pid] = node
        self.hosts = hosts
        self.status: dict[int, int] = {}  # pid -> wait status
        self.registry = job_file(self.job_id, ".steps") / f"{self.step}.json"
        self.registry.parent.mkdir(exist_ok=True)
        write_json(self.registry, {"step": self.step, "srun": [os.getpid(), start_time(os.getpid())],
                                    "hosts": hosts,
                                    "tasks": [[pid, self.started[pid], node, rank] for pid, node, rank in self.tasks]})
        try:
            return self._supervise(kill_on_bad_exit)
        finally:
            self.registry.unlink(missing_ok=True)

    def _next_step(self) -> int:
        with open(job_file(self.job_id, ".nextstep"), "a+") as counter:
            fcntl.flock(counter, fcntl.LOCK_EX)
            counter.seek(0)
            step = int(counter.read().strip() or 0)
            counter.truncate(0)
            counter.write(str(step + 1))
        return step

    def _reap(self) -> None:
        for pid, status in exited_children():
            if pid in self.procs:
                self.procs[pid].returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it
                self.status[pid] = status
                self._report(pid, status)

    def _report(self, pid: int, status: int) -> None:
        node, rank = next((n, r) for p, n, r in self.tasks if p == pid)
        code = os.waitstatus_to_exitcode(status)
        if code == 0 or (code < 0 and self.forced):
            return
        what = f"Exited with exit code {code}" if code > 0 else signal.strsignal(-code) + (
            " (core dumped)" if os.WCOREDUMP(status) else "")
        print(f"srun: error: {self.hosts[node]}: task {rank}: {what}", file=sys.stderr, flush=True)

    def _procs(self, table: dict, node: int | None = None) -> set[int]:
        """The step's processes (on one node): descendants of the tasks and of srun (orphans come to srun),
        members of the tasks' sessions and process groups."""
        leaders = {pid: self.started[pid] for pid, _node, _rank in self.tasks}
        found = (descendants(table, {os.getpid()}) | members(table, leaders)) - {os.getpid()}
        for pid in found:  # which node: its session's, or its nearest task ancestor's, or what it was
            sid = table[pid][2]
            if sid in leaders:
                self.node_of[pid] = self.node_of[sid]
                continue
            ancestor = table[pid][0]
            while ancestor in table and ancestor not in leaders and ancestor != os.getpid():
                ancestor = table[ancestor][0]
            if ancestor in leaders:
                self.node_of[pid] = self.node_of[ancestor]
        if node is None:
            return found
        return {pid for pid in found if self.node_of.get(pid) == node}  # one of unknown origin: at the step's end

    def _tasks(self) -> set[int]:
        return {pid for pid, _node, _rank in self.tasks if pid not in self.status}

    def _kill_all(self, sig: int) -> None:
        kill(self._procs(processes()) if sig == signal.SIGKILL or SIGNAL_CHILDREN else self._tasks(), sig)

    def _handle(self, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            if not self.forced:
                print("srun: forcing job termination", file=sys.stderr, flush=True)
            self.forced = True
            self._kill_all(signal.SIGKILL)
        elif sig == signal.SIGINT:
            if time.monotonic() - self.last_int < 1:
                print(f"srun: sending Ctrl-C to StepId={self.job_id}.{self.step}", file=sys.stderr, flush=True)
                self._kill_all(signal.SIGINT)
                self.forced = True
                self._kill_all(signal.SIGKILL)
            else:
                print("srun: interrupt (one more within 1 sec to abort)", file=sys.stderr, flush=True)
            self.last_int = time.monotonic()
        elif sig == signal.SIGCONT:
            pass  # "got SIGCONT"
        else:
            self._kill_all(sig)

    def _supervise(self, kill_on_bad_exit: bool) -> int:
        cleaned: set[int] = set()
        term_kill_at = None
        while True:
            self._reap()
            while self.pending:
                self._handle(self.pending.pop(0))
            done = {node for node in range(len(self.hosts))
                    if not any(n == node and p not in self.status for p, n, _r in self.tasks)}
            if done - cleaned or len(cleaned) == len(self.hosts):
                table = processes()
                for node in sorted(done - cleaned):  # a node's tasks are done: its slurmstepd kills what is left
                    kill(self._procs(table, node), signal.SIGKILL)
                    cleaned.add(node)
                if len(cleaned) == len(self.hosts):
                    leftovers = self._procs(table)
                    if not leftovers:
                        break
                    kill(leftovers, signal.SIGKILL)
            failed = [p for p, s in self.status.items() if os.waitstatus_to_exitcode(s) != 0]
            if kill_on_bad_exit and failed and term_kill_at is None and self._tasks():
                for host in sorted({self.hosts[n] for p, n, _r in self.tasks if p in self._tasks()}):
                    print(f"slurmstepd: error: *** STEP {self.job_id}.{self.step} ON {host} CANCELLED AT "
                          f"{now_str()} DUE TO TASK FAILURE ***", file=sys.stderr, flush=True)
                kill(self._tasks(), signal.SIGCONT)
                self._kill_all(signal.SIGTERM)
                term_kill_at = time.monotonic() + KILL_WAIT
            if term_kill_at is not None and time.monotonic() >= term_kill_at:
                self._kill_all(signal.SIGKILL)
            time.sleep(TICK)
        self._reap()
        codes = [os.waitstatus_to_exitcode(s) for s in self.status.values()]
        signalled = [-c for c in codes if c < 0]
        return 128 + max(signalled) if signalled else max(codes, default=0)


