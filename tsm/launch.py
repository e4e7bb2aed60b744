"""Start one node's training ranks and supervise them: `tsm launch --nodes N --gpus-per-node G -- ARGS`.

One node (a workstation, or a 1-node SLURM job): the ranks meet on 127.0.0.1; no SLURM variable is needed.
N nodes: the workflow's rule runs `srun --ntasks-per-node=1 tsm launch --nodes N ...`; each srun task reads
its node rank from SLURM_NODEID and the main address from the first host of the job's node list.

Why not `accelerate launch` (torchelastic): SLURM's warning signal (`--signal=TERM@T`, and preemption's
grace time) reaches the step's tasks (with cgroup.conf SignalChildrenProcesses=yes, every process of the
step). torchelastic answers it by closing its workers within 30 s and turns their exit 75 into 1. This
launcher, the step's task, instead passes the signal on, lets the ranks finish their step and checkpoint,
waits for all of them, and exits 75 (preempted, checkpoint written: run again). With `--requeue`, node 0
then puts its SLURM job back in the queue, provided the leg made progress, so a training that needs many
time-limit legs completes unattended while a crash loop stops.

Also here: OpenMPI's rank variables mapped to torch's for runs started with `mpirun`. What the run's records
say between legs (finished? how far did the last leg get? final-checkpoint parked) is read and kept by
tsm.records; this module only supervises: it spawns the ranks, passes signals on and requeues.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tsm.config import TsmError, config_from_argv
from tsm.records import (
    PREEMPTED_EXIT_CODE,  # a leg's "preempted, checkpoint written": the ranks' status, passed on
    TrainingSummary,
    park_final_checkpoint,
    restore_parked_final_checkpoint,
    run_has_finished,
)

DEFAULT_PORT = 29500
FAILURE_GRACE_S = 30.0  # after one rank fails, how long the others get before SIGKILL
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


@dataclass(frozen=True)
class Geometry:
    num_machines: int
    machine_rank: int
    main_address: str
    main_port: int
    processes_per_machine: int

    @property
    def num_processes(self) -> int:
        return self.num_machines * self.processes_per_machine


def slurm_hosts(nodelist: str) -> list[str]:
    """Expand a SLURM node list (`node[01-04]`) with scontrol, as SLURM itself does."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise TsmError(f"tsm launch: could not expand SLURM_JOB_NODELIST={nodelist!r} with scontrol ({exc})") from None
    hosts = out.split()
    if not hosts:
        raise TsmError(f"tsm launch: scontrol listed no hosts for SLURM_JOB_NODELIST={nodelist!r}")
    return hosts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main_port(env: Mapping[str, str], num_machines: int, port: int | None) -> int:
    """--port if given; on one node a free port (two jobs sharing a node must not collide); across nodes every
    node must compute the same one without talking: 29500 plus the job id, so jobs on shared hosts differ."""
    if port:
        return port
    if num_machines == 1:
        return free_port()
    return DEFAULT_PORT + int(env.get("SLURM_JOB_ID", "0")) % 10000


def slurm_geometry(env: Mapping[str, str], nodes: int | None, processes_per_machine: int,
                   port: int | None = None) -> Geometry:
    """Where this node's ranks sit. `nodes` (--nodes) wins over the job's SLURM variables: the rule's shell
    may see few of them. One node needs none of them."""
    if nodes == 1:
        return Geometry(1, 0, "127.0.0.1", main_port(env, 1, port), processes_per_machine)
    missing = [k for k in ("SLURM_NODEID", "SLURM_JOB_NODELIST") if k not in env]
    if missing:
        raise TsmError(
            f"tsm launch: {', '.join(missing)} not set. Across nodes, run it inside a SLURM allocation, one task "
            "per node: srun --ntasks-per-node=1 tsm launch --nodes N --gpus-per-node G -- <training arguments> "
            "(one node: tsm launch --nodes 1 ...)"
        )
    hosts = slurm_hosts(env["SLURM_JOB_NODELIST"])
    num_machines = nodes or int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or len(hosts))
    if num_machines > len(hosts):
        raise TsmError(f"tsm launch: --nodes {num_machines} but the job holds {len(hosts)} node(s) "
                       f"({env['SLURM_JOB_NODELIST']})")
    machine_rank = int(env["SLURM_NODEID"])
    if not 0 <= machine_rank < num_machines:
        raise TsmError(f"tsm launch: SLURM_NODEID={machine_rank} is outside 0..{num_machines - 1} (--nodes)")
    main_address = "127.0.0.1" if num_machines == 1 else hosts[0]
    return Geometry(num_machines, machine_rank, main_address, main_port(env, num_machines, port),
                    processes_per_machine)


def rank_environment(geometry: Geometry, local_rank: int, base: Mapping[str, str], use_cpu: bool,
                     threads: int | None) -> dict[str, str]:
    """What torch.distributed (env://) and accelerate read in a rank, as torchrun would set it."""
    env = dict(base)
    env.update({
        "RANK": str(geometry.machine_rank * geometry.processes_per_machine + local_rank),
        "WORLD_SIZE": str(geometry.num_processes), "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(geometry.processes_per_machine), "GROUP_RANK": str(geometry.machine_rank),
        "NODE_RANK": str(geometry.machine_rank), "MASTER_ADDR": geometry.main_address,
        "MASTER_PORT": str(geometry.main_port),
        # tsm's config decides precision and compilation itself
        "ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_DYNAMO_BACKEND": "NO",
    })
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "true"  # gloo ranks on CPU
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def combined_exit_status(statuses: Sequence[int]) -> int:
    """0 when every rank finished; 75 when all finished or checkpointed after a signal; otherwise the first
    failure (a rank killed by signal S counts as 128 + S, as a shell reports it)."""
    codes = [128 - s if s < 0 else s for s in statuses]
    failures = [c for c in codes if c not in (0, PREEMPTED_EXIT_CODE)]
    if failures:
        return failures[0]
    return PREEMPTED_EXIT_CODE if PREEMPTED_EXIT_CODE in codes else 0


class RankSupervisor:
    """Runs this node's ranks as children in its own process group, passes SLURM's and the user's signals on,
    and waits for all of them. Once a rank fails, the others get SIGTERM and, FAILURE_GRACE_S later, SIGKILL:
    a surviving rank would otherwise wait in a collective for the dead one until NCCL's timeout."""

    def __init__(self, commands: Sequence[Sequence[str]], envs: Sequence[Mapping[str, str]],
                 failure_grace_s: float = FAILURE_GRACE_S):
        self.commands, self.envs, self.failure_grace_s = commands, envs, failure_grace_s
        self.procs: list[subprocess.Popen] = []
        self.signalled_at: float | None = None
        self.signal_name = ""

    def _forward(self, signum: int, frame: object) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()
            self.signal_name = signal.Signals(signum).name
            print(f"tsm launch: received {self.signal_name}: passing it to the ranks, waiting for their checkpoint",
                  file=sys.stderr, flush=True)
        self._signal_running(signum)  # a rank that already got it from SLURM ignores the repeat

    def run(self) -> list[int]:
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED_SIGNALS}
        try:
            pairs = zip(self.commands, self.envs, strict=True)
            self.procs = [subprocess.Popen(list(cmd), env=dict(env)) for cmd, env in pairs]
            return self._wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _wait(self) -> list[int]:
        failed_at = None
        while any(p.poll() is None for p in self.procs):
            if failed_at is None and any(p.returncode not in (None, 0, PREEMPTED_EXIT_CODE) for p in self.procs):
                failed_at = time.monotonic()
                self._signal_running(signal.SIGTERM)
            elif failed_at is not None and time.monotonic() - failed_at > self.failure_grace_s:
                self._signal_running(signal.SIGKILL)
            time.sleep(0.2)
        if self.signalled_at is not None:
            print(f"tsm launch: ranks exited {time.monotonic() - self.signalled_at:.0f} s after {self.signal_name}",
                  file=sys.stderr, flush=True)
        return [p.returncode for p in self.procs]

    def _signal_running(self, signum: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)


def run_folder(train_args: Sequence[str]) -> Path | None:
    """The run's output folder, from the training arguments; None when they do not parse (the ranks, started
    with the same arguments, say why)."""
    try:
        return Path(config_from_argv(train_args).output_dir)
    except (TsmError, ValueError, OSError):
        return None


def run_progress(run: Path | None) -> tuple[int, int] | None:
    """(first step, last step) of the run's latest leg, from the run folder's training summary; None if it has
    none."""
    try:
        summary = TrainingSummary.read(run) if run is not None else None
    except (ValueError, OSError) as exc:
        print(f"tsm launch: could not read the run's training summary ({exc})", file=sys.stderr)
        return None
    if summary is None or not summary.legs:
        return None
    return summary.legs[-1].first_step, summary.legs[-1].last_step


def describe_failure(status: int, progress: tuple[int, int] | None) -> str:
    where = ""
    if progress is not None:
        first, last = progress
        where = (f"; stuck at step {first}: this leg made no progress from its checkpoint" if last == first
                 else f"; this leg went from step {first} to {last}")
    return f"tsm launch: a rank failed with exit status {status}{where}. Its log is above."


def requeue(env: Mapping[str, str], progress: tuple[int, int] | None) -> None:
    """After a checkpointed stop: put this SLURM job back in the queue if the leg made progress (a job that
    stops at the same step again and again is not requeued: it ends, and the workflow's retries are few)."""
    job = env.get("SLURM_JOB_ID")
    if not job:
        print("tsm launch: --requeue outside a SLURM job: nothing to requeue", file=sys.stderr)
        return
    if progress is None or progress[1] <= progress[0]:
        at = f" (stuck at step {progress[0]})" if progress else ""
        print(f"tsm launch: no progress in this leg{at}: job {job} is not requeued", file=sys.stderr, flush=True)
        return
    print(f"tsm launch: leg trained steps {progress[0]}-{progress[1]}: requeueing job {job} (scontrol requeue)",
          file=sys.stderr, flush=True)
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"tsm launch: scontrol requeue {job} failed ({exc})", file=sys.stderr)
        return
    if result.returncode != 0:  # e.g. SLURM requeues it itself (PreemptMode=REQUEUE), or JobRequeue=0
        print(f"tsm launch: scontrol requeue {job}: {result.stderr.strip() or result.returncode}", file=sys.stderr)


def map_mpi_environment(env: MutableMapping[str, str]) -> bool:
    """Under `mpirun`, set RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT from OpenMPI's
    variables (main address: MASTER_ADDR if set, else the hostfile's first host). True if it mapped."""
    if "OMPI_COMM_WORLD_RANK" not in env or "RANK" in env:
        return False
    env["RANK"] = env["OMPI_COMM_WORLD_RANK"]
    env["WORLD_SIZE"] = env["OMPI_COMM_WORLD_SIZE"]
    env["LOCAL_RANK"] = env.get("OMPI_COMM_WORLD_LOCAL_RANK", "0")
    env["LOCAL_WORLD_SIZE"] = env.get("OMPI_COMM_WORLD_LOCAL_SIZE", "1")
    if "MASTER_ADDR" not in env:
        host = _hostfile_first_host(env)
        if host is None:
            if env["WORLD_SIZE"] != env["LOCAL_WORLD_SIZE"]:
                raise TsmError(
                    "mpirun across nodes: set MASTER_ADDR (the first node's address) or pass the hostfile "
                    "through TSM_HOSTFILE, so every rank knows where rank 0 listens"
                )
            host = "127.0.0.1"  # all ranks on this node
        env["MASTER_ADDR"] = host
    env.setdefault("MASTER_PORT", str(DEFAULT_PORT))
    return True


def _hostfile_first_host(env: Mapping[str, str]) -> str | None:
    for key in ("TSM_HOSTFILE", "OMPI_MCA_orte_default_hostfile", "OMPI_MCA_prte_default_hostfile",
                "OMPI_MCA_rmaps_base_hostfile"):
        if env.get(key) and Path(env[key]).is_file():
            for line in Path(env[key]).read_text().splitlines():
                host = line.split("#", 1)[0].split()
                if host:
                    return host[0]
    return None


def step_cpus(env: Mapping[str, str]) -> str:
    """The CPUs this process may run on (SLURM's step cgroup / --cpus-per-task), for the launch line."""
    try:
        return str(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return env.get("SLURM_CPUS_PER_TASK", "?")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tsm launch", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The ranks are this launcher's own children (no torchelastic, no `accelerate launch`): a signal\n"
               "(SLURM's warning signal, preemption, Ctrl-C) reaches every rank, which finishes its step and\n"
               f"checkpoints. Exit status: 0 when the training finished; {PREEMPTED_EXIT_CODE} when it stopped at a "
               "signal with\na checkpoint written (run the same command again to resume); otherwise the first "
               "failed rank's.")
    parser.add_argument("--nodes", type=int, help="nodes in the job (default: SLURM_JOB_NUM_NODES)")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="ranks per node (one per GPU)")
    parser.add_argument("--port", type=int, help="main port (default: free on one node, 29500 + job id %% 10000)")
    parser.add_argument("--cpu", action="store_true", help="CPU ranks over gloo (tests, no GPUs)")
    parser.add_argument("--cpu-threads-per-process", type=int)
    parser.add_argument("--requeue", action="store_true",
                        help="in a SLURM job: after a checkpointed stop (exit 75) that made progress, requeue the job")
    parser.add_argument("--dry-run", action="store_true", help="print the ranks' command, do not run it")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of tsm train")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.nodes is not None and args.nodes < 1 or args.gpus_per_node < 1:
        raise TsmError("tsm launch: --nodes and --gpus-per-node must be at least 1")
    geometry = slurm_geometry(os.environ, args.nodes, args.gpus_per_node, args.port)
    command = [sys.executable, "-m", "tsm.train", *train_args]
    print(f"tsm launch: node {geometry.machine_rank}/{geometry.num_machines}, main {geometry.main_address}:"
          f"{geometry.main_port}, {geometry.num_processes} processes, {step_cpus(os.environ)} CPUs for this node's "
          f"step: {shlex.join(command)}", file=sys.stderr, flush=True)
    if args.dry_run:
        print(shlex.join(command))
        return 0
    job = os.environ.get("SLURM_JOB_ID")
    run = run_folder(train_args)
    restored = restore_parked_final_checkpoint(run, job, geometry.machine_rank) if run is not None else None
    if restored is not None:
        print(f"tsm launch: job {job}'s last leg finished the run as it was signalled: {restored} is in place, "
              "nothing to train", file=sys.stderr, flush=True)
        return 0
    envs = [rank_environment(geometry, local, os.environ, args.cpu, args.cpu_threads_per_process)
            for local in range(geometry.processes_per_machine)]
    supervisor = RankSupervisor([command] * len(envs), envs)
    status = combined_exit_status(supervisor.run())
    signalled_finished = supervisor.signalled_at is not None and run is not None and run_has_finished(run)
    finished = run if signalled_finished else None
    if finished is not None:
        # The warning signal came as the training finished (ranks stopped in their exit count as done). It
        # reached the job's other processes too: the workflow's job step then fails the job and deletes the
        # rule's output. With --requeue the job comes back instead, final-checkpoint parked until then.
        print(f"tsm launch: the training had finished when {supervisor.signal_name} arrived (rank status "
              f"{status})", file=sys.stderr, flush=True)
        status = 0
        if args.requeue and job:
            if geometry.machine_rank == 0:
                park_final_checkpoint(finished, job)
            status = PREEMPTED_EXIT_CODE
    if status not in (0, PREEMPTED_EXIT_CODE):
        print(describe_failure(status, run_progress(run)), file=sys.stderr, flush=True)
    elif status == PREEMPTED_EXIT_CODE and args.requeue and geometry.machine_rank == 0:
        requeue(os.environ, run_progress(run))
    return status
