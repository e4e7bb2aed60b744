"""Fake SLURM commands that run jobs on this machine, so that the real snakemake slurm executor plugin can
submit, poll and finish a DAG without a cluster (tests/workflow/test_cluster_profile.py).

Each command in this folder (sbatch, sacct, squeue, scancel, scontrol, srun, sinfo, sacctmgr) runs
`fakeslurm.py NAME ARGS`. State lives in $FAKE_SLURM_STATE: for job J, J.json (options, geometry, pid),
J.sh (the batch script), J.rc (its exit status, once done), J.cancelled (after scancel); every call is
appended to calls.log. A job of N nodes gets the nodes 127.0.0.[1-N]: distinct names that all are this
machine (127/8 is loopback), so a main address picked from the node list is reachable from every "node".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_STATE", "/tmp/fake-slurm"))
# options that take no value (per command); every other `--opt` without `=` takes the next word
FLAGS = {"sbatch": {"--parsable", "--exclusive", "--requeue", "--no-requeue"},
         "srun": {"--exclusive", "--overlap", "-l", "--label"},
         "sacct": {"-X", "--allocations", "-n", "--noheader", "-P", "--parsable2"},
         "squeue": {"-h", "--noheader"}, "sinfo": {"-h", "--noheader"}}
SHORT = {"-A": "account", "-p": "partition", "-t": "time", "-C": "constraint", "-D": "chdir", "-J": "job-name",
         "-o": "output", "-e": "error", "-N": "nodes", "-n": "ntasks", "-c": "cpus-per-task", "-j": "jobs",
         "-u": "user", "-M": "clusters", "-w": "nodelist"}
# what the fake sbatch accepts (--signal is accepted and ignored); anything else is an error, as in sbatch
SBATCH_NUMERIC = {"nodes", "ntasks", "ntasks-per-node", "ntasks-per-gpu", "cpus-per-task", "cpus-per-gpu",
                  "mem-per-cpu"}
SBATCH_OPTIONS = SBATCH_NUMERIC | {
    "parsable", "job-name", "output", "error", "export", "comment", "account", "partition", "time", "constraint",
    "qos", "mem", "requeue", "no-requeue", "reservation", "exclude", "clusters", "gres", "gpus", "exclusive",
    "signal", "chdir", "wrap", "mail-type", "mail-user", "nodelist"}


def parse(args: list[str], command: str) -> tuple[dict[str, str], list[str]]:
    """Options up to the first non-option word (the script or command), then the rest."""
    opts: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        word = args[i]
        if "=" in word and word.startswith("--"):
            key, value = word[2:].split("=", 1)
        elif word in FLAGS.get(command, ()):
            key, value = word.lstrip("-"), "1"
        elif word[:2] in SHORT and len(word) > 2:  # -n1
            key, value = SHORT[word[:2]], word[2:]
        else:
            key, value = SHORT.get(word, word.lstrip("-")), args[i + 1]
            i += 1
        opts[key] = value
        i += 1
    return opts, args[i + (i < len(args) and args[i] == "--"):]



def _error(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def hostlist(nodes: int) -> str:
    return "127.0.0.1" if nodes == 1 else f"127.0.0.[1-{nodes}]"


def expand(nodelist: str) -> list[str]:
    """`pre[1-3,7]` -> pre1 pre2 pre3 pre7 (zero padding kept), comma-separated lists too."""
    hosts = []
    for prefix, ranges, plain in re.findall(r"([^,\[]*)\[([^\]]*)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            hosts += [f"{prefix}{n:0{len(lo)}d}" for n in range(int(lo), int(hi or lo) + 1)]
    return hosts


def job(job_id: str) -> dict:
    return json.loads((STATE / f"{job_id.split('.')[0]}.json").read_text())


def state(info: dict) -> str:
    rc = STATE / f"{info['id']}.rc"
    if (STATE / f"{info['id']}.cancelled").exists():
        return "CANCELLED"
    if rc.exists():
        return "COMPLETED" if rc.read_text().strip() == "0" else "FAILED"
    return "RUNNING"


def jobs() -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in STATE.glob("*.json")), key=lambda j: int(j["id"]))


def sbatch(args: list[str]) -> int:
    opts, rest = parse(args, "sbatch")
    for key, value in opts.items():  # as strict as the real one: a quoted 'A B' word is one option
        if key not in SBATCH_OPTIONS:
            return _error(f"sbatch: unrecognized option '--{key}'")
        if key in SBATCH_NUMERIC and not value.isdigit():
            return _error(f'sbatch: error: Invalid numeric value "{value}" for --{key}.')
    with open(STATE / "next_id", "a+") as counter:  # the plugin submits from two threads
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        job_id = counter.read().strip() or "1000"
        counter.truncate(0)
        counter.write(str(int(job_id) + 1))
    nodes = int(opts.get("nodes", 1))
    workdir = Path(opts.get("chdir", os.getcwd()))
    if "wrap" in opts:
        script = "#!/bin/sh\n" + opts["wrap"] + "\n"
    else:
        path = rest[0] if rest else "-"  # no script file: the script comes on stdin
        script = sys.stdin.read() if path in ("-", "/dev/stdin") else Path(path).read_text()
    (STATE / f"{job_id}.sh").write_text(script)
    output = workdir / opts.get("output", "slurm-%j.out").replace("%j", job_id)
    info = {"id": job_id, "name": opts.get("job-name", "sbatch"), "argv": args, "options": opts, "nodes": nodes,
            "ntasks": int(opts.get("ntasks", nodes)), "nodelist": hostlist(nodes), "workdir": str(workdir),
            "output": str(output)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # --export=ALL
    env.update({
        "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id, "SLURM_JOB_NAME": info["name"],
        "SLURM_JOB_NODELIST": info["nodelist"], "SLURM_NODELIST": info["nodelist"],
        "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NTASKS": str(info["ntasks"]),
        "SLURM_CPUS_PER_TASK": opts.get("cpus-per-task", "1"), "SLURM_SUBMIT_DIR": os.getcwd(),
        "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURMD_NODENAME": expand(info["nodelist"])[0],
        "SLURM_CLUSTER_NAME": "fake",
    })
    rc = STATE / f"{job_id}.rc"
    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'sh "$1" > "$2" 2>&1; echo $? > "$3.tmp"; mv "$3.tmp" "$3"', "job",
         str(STATE / f"{job_id}.sh"), str(output), str(rc)],
        cwd=workdir, env=env, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info["pid"] = proc.pid
    (STATE / f"{job_id}.tmp").write_text(json.dumps(info, indent=1))
    (STATE / f"{job_id}.tmp").rename(STATE / f"{job_id}.json")
    print(job_id if "parsable" in opts else f"Submitted batch job {job_id}")
    return 0


def sacct(args: list[str]) -> int:
    opts, _ = parse(args, "sacct")
    fields = opts.get("format", opts.get("output", "JobIdRaw,State")).split(",")
    selected = [j for j in jobs() if opts.get("name") in (None, j["name"])]
    if "jobs" in opts:
        if "." in opts["jobs"]:  # a step: its Reason
            return 0
        selected = [j for j in selected if j["id"] == opts["jobs"]]
    for info in selected:
        values = {"jobidraw": info["id"], "jobid": info["id"], "state": state(info), "jobname": info["name"],
                  "nodelist": info["nodelist"], "nnodes": str(info["nodes"]),
                  "account": info["options"].get("account", ""), "comment": info["options"].get("comment", "")}
        print("|".join(values.get(f.split("%")[0].lower(), "") for f in fields))
    return 0


def squeue(args: list[str]) -> int:
    opts, _ = parse(args, "squeue")
    for info in jobs():
        if opts.get("name") in (None, info["name"]) and (state(info) == "RUNNING" or "states" in opts):
            print(f"{info['id']}|{state(info)}")
    return 0


def scancel(args: list[str]) -> int:
    _, ids = parse(args, "scancel")
    for job_id in ids:
        info = job(job_id)
        if state(info) == "RUNNING":
            (STATE / f"{job_id}.cancelled").touch()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(info["pid"], signal.SIGTERM)  # the job's srun passes it on to its tasks
    return 0


def scontrol(args: list[str]) -> int:
    what = " ".join(args[:2])
    if what == "show hostnames":
        nodelist = args[2] if len(args) > 2 else os.environ.get("SLURM_JOB_NODELIST", "")
        print("\n".join(expand(nodelist)))
    elif what == "show config":
        print("Configuration data as of now\nClusterName             = fake\nMaxArraySize            = 1001\n"
              "MinJobAge               = 300 sec\nSelectType              = select/cons_tres")
    elif what == "show partition":
        print("PartitionName=gpu\n   Default=YES MaxNodes=UNLIMITED MaxTime=UNLIMITED\n   State=UP TotalNodes=8")
    else:
        print(f"scontrol (fake): {what}: not implemented", file=sys.stderr)
        return 1
    return 0


def srun(args: list[str]) -> int:
    """One job step: tasks spread block-wise over the job's nodes, each with its SLURM_NODEID, SLURM_PROCID
    and SLURM_LOCALID, each in its own process group (its "node"). Waits for all; once one fails the others
    are killed (KillOnBadExit=1), and whatever a task left running is killed at the end of the step."""
    opts, command = parse(args, "srun")
    info = job(opts.get("jobid", os.environ["SLURM_JOB_ID"]))
    hosts = expand(info["nodelist"])[: int(opts.get("nodes", info["nodes"]))]
    ntasks = int(opts.get("ntasks", len(hosts) * int(opts.get("ntasks-per-node", 1))))
    per_node = -(-ntasks // len(hosts))
    step = len([line for line in _calls() if line.startswith(f"srun {info['id']} ")])
    _log(f"srun {info['id']} {step} ntasks={ntasks} nodes={len(hosts)} {shlex.join(args)}")
    procs = []
    for rank in range(ntasks):
        node = rank // per_node
        env = {**os.environ, "SLURM_JOB_ID": info["id"], "SLURM_JOBID": info["id"], "SLURM_STEP_ID": str(step),
               "SLURM_JOB_NODELIST": info["nodelist"], "SLURM_NODELIST": info["nodelist"],
               "SLURM_JOB_NUM_NODES": str(info["nodes"]), "SLURM_NNODES": str(len(hosts)),
               "SLURM_STEP_NODELIST": ",".join(hosts), "SLURM_STEP_NUM_NODES": str(len(hosts)),
               "SLURM_NTASKS": str(ntasks), "SLURM_NPROCS": str(ntasks), "SLURM_STEP_NUM_TASKS": str(ntasks),
               "SLURM_NODEID": str(node), "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank % per_node),
               "SLURMD_NODENAME": hosts[node]}
        if "cpus-per-task" in opts:
            env["SLURM_CPUS_PER_TASK"] = opts["cpus-per-task"]
        procs.append(subprocess.Popen(command, env=env, start_new_session=True,
                                      stdin=None if rank == 0 else subprocess.DEVNULL))

    def kill(sig: int) -> None:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)

    signal.signal(signal.SIGTERM, lambda signum, frame: kill(signum))  # scancel, --signal
    signal.signal(signal.SIGINT, lambda signum, frame: kill(signum))
    first_failure, failed_at = 0, 0.0
    while [p for p in procs if p.poll() is None]:  # polls every task
        if not first_failure and any(p.returncode not in (None, 0) for p in procs):
            first_failure = next(abs(p.returncode) for p in procs if p.returncode not in (None, 0))
            failed_at = time.monotonic()
            kill(signal.SIGTERM)
        elif first_failure and time.monotonic() - failed_at > 10:
            kill(signal.SIGKILL)
        time.sleep(0.2)
    kill(signal.SIGKILL)
    failed = [p.returncode for p in procs if p.returncode != 0]
    if failed:
        print(f"srun: error: {len(failed)} task(s) exited with a non-zero status", file=sys.stderr)
    return first_failure or (abs(failed[0]) if failed else 0)


def sinfo(args: list[str]) -> int:
    opts, _ = parse(args, "sinfo")
    print("PARTITION\ngpu*" if "%P" in (opts.get("output"), opts.get("format")) else
          "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST\ngpu*         up   infinite      8   idle 127.0.0.[1-8]")
    return 0


def sacctmgr(args: list[str]) -> int:
    print(os.environ.get("FAKE_SLURM_ACCOUNTS", "tsm"))  # `sacctmgr -n -s list user U format=account`
    return 0


def _calls() -> list[str]:
    path = STATE / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def _log(line: str) -> None:
    with open(STATE / "calls.log", "a") as f:
        f.write(line + "\n")


def main() -> int:
    name, args = sys.argv[1], sys.argv[2:]
    STATE.mkdir(parents=True, exist_ok=True)
    if name != "srun":
        _log(f"{name} {shlex.join(args)}")
    return globals()[name](args)


if __name__ == "__main__":
    sys.exit(main())
