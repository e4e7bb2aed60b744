"""Multi-node launch: one `accelerate launch` per node inside a SLURM job, and OpenMPI's rank variables
mapped to torch's for runs started with `mpirun`.

SLURM: the workflow's rule runs `srun --ntasks-per-node=1 tsm launch --nodes N --gpus-per-node G -- ARGS`.
Each srun task reads its node rank from SLURM_NODEID and the main address from the first host of
`scontrol show hostnames $SLURM_JOB_NODELIST`; accelerate's --num_processes is the total over all nodes.
The geometry is passed explicitly because the rule's shell sees almost none of the job's SLURM_* variables.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tsm.config import TsmError

DEFAULT_PORT = 29500


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


def slurm_geometry(env: Mapping[str, str], nodes: int | None, processes_per_machine: int, port: int) -> Geometry:
    missing = [k for k in ("SLURM_NODEID", "SLURM_JOB_NODELIST") if k not in env]
    if missing:
        raise TsmError(
            f"tsm launch: {', '.join(missing)} not set. Run it inside a SLURM allocation, one task per node: "
            "srun --ntasks-per-node=1 tsm launch --nodes N --gpus-per-node G -- <training arguments>"
        )
    hosts = slurm_hosts(env["SLURM_JOB_NODELIST"])
    num_machines = nodes or int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or len(hosts))
    machine_rank = int(env["SLURM_NODEID"])
    if not 0 <= machine_rank < num_machines:
        raise TsmError(f"tsm launch: SLURM_NODEID={machine_rank} is outside 0..{num_machines - 1} (--nodes)")
    return Geometry(num_machines, machine_rank, hosts[0], port, processes_per_machine)


def accelerate_command(geometry: Geometry, train_args: Sequence[str],
                       cpu_threads_per_process: int | None = None) -> list[str]:
    """CPU ranks come from ACCELERATE_USE_CPU=true in the environment (`--cpu` would start one process)."""
    cmd = [
        "accelerate", "launch", "--multi_gpu",
        "--num_machines", str(geometry.num_machines), "--machine_rank", str(geometry.machine_rank),
        "--main_process_ip", geometry.main_address, "--main_process_port", str(geometry.main_port),
        "--num_processes", str(geometry.num_processes),  # the total over all machines
        "--mixed_precision", "no", "--dynamo_backend", "no",  # tsm's config decides precision itself
    ]
    if cpu_threads_per_process:
        cmd += ["--num_cpu_threads_per_process", str(cpu_threads_per_process)]
    return [*cmd, "-m", "tsm.train", *train_args]


def _hostfile_first_host(env: Mapping[str, str]) -> str | None:
    for key in ("TSM_HOSTFILE", "OMPI_MCA_orte_default_hostfile", "OMPI_MCA_prte_default_hostfile",
                "OMPI_MCA_rmaps_base_hostfile"):
        if env.get(key) and Path(env[key]).is_file():
            for line in Path(env[key]).read_text().splitlines():
                host = line.split("#", 1)[0].split()
                if host:
                    return host[0]
    return None


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tsm launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, help="nodes in the job (default: SLURM_JOB_NUM_NODES)")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="processes per node (one per GPU)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--cpu", action="store_true", help="CPU ranks over gloo (tests, no GPUs)")
    parser.add_argument("--cpu-threads-per-process", type=int)
    parser.add_argument("--dry-run", action="store_true", help="print the accelerate command, do not run it")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of tsm train")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    geometry = slurm_geometry(os.environ, args.nodes, args.gpus_per_node, args.port)
    cmd = accelerate_command(geometry, train_args, args.cpu_threads_per_process)
    print(f"tsm launch: node {geometry.machine_rank}/{geometry.num_machines}, main {geometry.main_address}:"
          f"{geometry.main_port}, {geometry.num_processes} processes: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"} if args.cpu else None
    return subprocess.call(cmd, env=env)
