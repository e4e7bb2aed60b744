"""Fake SLURM commands that run jobs on this machine, so that the real snakemake slurm executor plugin can
submit, poll and finish a DAG without a cluster (tests/workflow/test_cluster_profile.py), and so that tests can
see what real SLURM does to a job where users get hurt (tests/workflow/test_fake_slurm.py): time limits,
warning signals, the end of a step, preemption and requeueing.

Each command in this folder (sbatch, sacct, squeue, scancel, scontrol, srun, sinfo, sacctmgr, and the test-only
fake-preempt) runs `fakeslurm.py NAME ARGS`. A job of N nodes gets the nodes 127.0.0.[1-N]: distinct names that
all are this machine (127/8 is loopback), so a main address picked from the node list is reachable from every
"node".

State lives in $FAKE_SLURM_STATE: for job J, J.json (options, geometry, `pid`: the job's controller), J.sh (the
batch script), J.env.json (its environment), J.state (what slurmctld and the accounting know: squeue's and
sacct's state, restarts, requests), J.rc (the exit status of the batch script's last run, once the job is
done; a run that is requeued writes none), J.cancelled (after scancel), J.steps/ (the running steps' process
ids), J.controller.log; every call and every signal the fake delivers is appended to calls.log
(`signal J SIGTERM steps`, `state J TIMEOUT`, ...).

Each job has a controller (`fakeslurm.py _controller J`, its own session, a child subreaper so that nothing
the job starts escapes it) that plays slurmctld and slurmstepd: it runs the batch script (again after a
requeue), keeps the clock, and signals the job's processes as SLURM does with proctrack/cgroup:
  * a signal other than SIGKILL reaches only the "tasks": the batch shell for the batch step, the processes
    srun started for a step; their children get only the final SIGKILL (cgroup.conf SignalChildrenProcesses=no,
    the default). FAKE_SLURM_SIGNAL_CHILDREN=1 models SignalChildrenProcesses=yes: every process of the step;
  * SIGKILL reaches every process of the step: its tasks' process groups and sessions, and all their
    descendants (also one that called setsid; orphans are reparented to srun or the controller).
Time limit (sbatch -t, SLURM's formats, seconds rounded up to minutes): at the limit the job becomes TIMEOUT,
the steps' tasks get SIGTERM, then every task and the batch shell SIGCONT+SIGTERM, and KillWait later SIGKILL.
--signal=[{R|B}:]SIG[@TIME] (default TIME 60 s): SIGCONT+SIG to the steps' tasks (not the batch shell), or with
B: to the batch shell alone, TIME before the limit. A step ends when its tasks have exited: whatever they left
is SIGKILLed. `scontrol requeue` and preemption end the run (as above) and run the batch script again under the
same id with SLURM_RESTART_COUNT+1; the output file is truncated again (--open-mode=append keeps it).

Environment (real seconds unless said otherwise):
  FAKE_SLURM_SECONDS_PER_MINUTE  length of one SLURM minute (default 60): -t and --signal's TIME are scaled
  FAKE_SLURM_KILL_WAIT           slurm.conf KillWait (default 30)
  FAKE_SLURM_REQUEUE_DEFAULT     slurm.conf JobRequeue (default 1): 0 = only --requeue jobs may be requeued
  FAKE_SLURM_REQUEUE_DELAY       how long a requeued job stays PENDING (default 1; SLURM's is ~121 s)
  FAKE_SLURM_SIGNAL_CHILDREN     cgroup.conf SignalChildrenProcesses (default 0)
  FAKE_SLURM_KILL_ON_BAD_EXIT    slurm.conf KillOnBadExit (default 1 here; SLURM's default is 0)
  FAKE_SLURM_GRACE_TIME          fake-preempt: the partition's GraceTime (default 5; SLURM's default is 0)
  FAKE_SLURM_PREEMPT_MODE        fake-preempt: PreemptMode, requeue (default) or cancel
  FAKE_SLURM_ACCOUNTS            what sacctmgr lists
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_STATE", "/tmp/fake-slurm"))
HERE = Path(__file__).resolve()
TICK = 0.05
MIN_JOB_AGE = 300  # `scontrol show config`: how long squeue still lists a finished job


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    return default if not value else value not in ("0", "no", "false")


SECONDS_PER_MINUTE = _env_float("FAKE_SLURM_SECONDS_PER_MINUTE", 60.0)
KILL_WAIT = _env_float("FAKE_SLURM_KILL_WAIT", 30.0)
REQUEUE_DELAY = _env_float("FAKE_SLURM_REQUEUE_DELAY", 1.0)
SIGNAL_CHILDREN = _env_flag("FAKE_SLURM_SIGNAL_CHILDREN", False)

# options that take no value (per command); every other `--opt` without `=` takes the next word
FLAGS = {"sbatch": {"--parsable", "--exclusive", "--requeue", "--no-requeue"},
         "srun": {"--exclusive", "--overlap", "-l", "--label", "-K", "--kill-on-bad-exit"},
         "sacct": {"-X", "--allocations", "-n", "--noheader", "-P", "--parsable2", "-p", "--parsable",
                   "-D", "--duplicates", "-a", "--allusers"},
         "squeue": {"-h", "--noheader", "-a", "--all", "-l", "--long", "--me"},
         "sinfo": {"-h", "--noheader"},
         "scancel": {"-b", "--batch", "-f", "--full", "-Q", "--quiet", "-v", "--verbose", "-i", "--interactive"}}
SHORT = {"-A": "account", "-p": "partition", "-t": "time", "-C": "constraint", "-D": "chdir", "-J": "job-name",
         "-o": "output", "-e": "error", "-N": "nodes", "-n": "ntasks", "-c": "cpus-per-task", "-j": "jobs",
         "-u": "user", "-M": "clusters", "-w": "nodelist", "-K": "kill-on-bad-exit"}
SHORT_BY_COMMAND = {"squeue": {"-t": "states", "-o": "format", "-n": "name", "-p": "partition"},
                    "sacct": {"-o": "format", "-S": "starttime", "-E": "endtime", "-s": "state", "-n": "noheader",
                              "-D": "duplicates"},
                    "scancel": {"-s": "signal", "-n": "name", "-b": "batch", "-f": "full", "-t": "state"}}
# what the fake sbatch accepts; anything else is an error, as in sbatch
SBATCH_NUMERIC = {"nodes", "ntasks", "ntasks-per-node", "ntasks-per-gpu", "cpus-per-task", "cpus-per-gpu",
                  "mem-per-cpu"}
SBATCH_OPTIONS = SBATCH_NUMERIC | {
    "parsable", "job-name", "output", "error", "export", "comment", "account", "partition", "time", "constraint",
    "qos", "mem", "requeue", "no-requeue", "reservation", "exclude", "clusters", "gres", "gpus", "exclusive",
    "signal", "chdir", "wrap", "mail-type", "mail-user", "nodelist", "open-mode"}
ACTIVE = ("PENDING", "RUNNING", "COMPLETING")
COMPACT = {"PENDING": "PD", "RUNNING": "R", "COMPLETING": "CG", "COMPLETED": "CD", "CANCELLED": "CA",
           "FAILED": "F", "TIMEOUT": "TO", "PREEMPTED": "PR", "NODE_FAIL": "NF", "REQUEUED": "RQ"}


def parse(args: list[str], command: str) -> tuple[dict[str, str], list[str]]:
    """Options up to the first non-option word (the script or command), then the rest."""
    short = {**SHORT, **SHORT_BY_COMMAND.get(command, {})}
    opts: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        word = args[i]
        if "=" in word and word.startswith("--"):
            key, value = word[2:].split("=", 1)
        elif word in FLAGS.get(command, ()):
            key, value = short.get(word, word.lstrip("-")), "1"
        elif word[:2] in short and len(word) > 2 and not word.startswith("--"):  # -n1
            key, value = short[word[:2]], word[2:]
        else:
            key, value = short.get(word, word.lstrip("-")), args[i + 1] if i + 1 < len(args) else ""
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


# --- SLURM's parsers ---------------------------------------------------------------------------------------

def _scan(text: str, separators: str) -> list[int]:
    """C's sscanf("%d<s1>%d<s2>%d...") on text: the numbers up to the first mismatch."""
    values, pos = [], 0
    for i in range(len(separators) + 1):
        match = re.match(r"\s*[+-]?\d+", text[pos:])
        if not match:
            break
        values.append(int(match.group()))
        pos += match.end()
        if i == len(separators) or text[pos:pos + 1] != separators[i]:
            break
        pos += 1
    return values


def time_minutes(text: str) -> int | None:
    """sbatch --time as SLURM's time_str2mins: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S; seconds round up to
    the next minute; 0, -1, INFINITE and UNLIMITED are no limit (None). ValueError when invalid."""
    if text.lower() in ("-1", "infinite", "unlimited"):
        return None
    digits = dashes = colons = 0
    in_digit = False
    for char in text:  # _is_valid_timespec
        if char.isdigit():
            digits += not in_digit
            in_digit = True
        elif char in "-:":
            in_digit = False
            if char == "-" and colons:
                raise ValueError(text)
            dashes += char == "-"
            colons += char == ":"
        else:
            raise ValueError(text)
    needed = ({0: 1, 1: 3, 2: 4} if dashes else {0: 1, 1: 2, 2: 3}).get(colons, 99)
    if not digits or dashes > 1 or colons > 2 or digits < needed:
        raise ValueError(text)
    if dashes:
        d, h, m, s = (_scan(text, "-::") + [0, 0, 0, 0])[:4]
        seconds = d * 86400 + h * 3600 + m * 60 + s
    else:
        values = _scan(text, "::")
        if len(values) == 3:
            seconds = values[0] * 3600 + values[1] * 60 + values[2]
        else:
            values += [0, 0]
            seconds = values[0] * 60 + values[1]
    minutes = math.ceil(seconds / 60)
    return minutes or None


def signal_number(name: str) -> int:
    """SLURM's sig_name2num: a number, or a name with or without SIG (any case); 0 when unknown."""
    name = name.strip()
    if re.fullmatch(r"[+-]?\d+", name):
        return int(name)
    if name[:3].upper() == "SIG":
        name = name[3:]
    with contextlib.suppress(KeyError):
        return int(signal.Signals["SIG" + name.upper()])
    return 0


def parse_signal(spec: str) -> dict:
    """--signal=[{R|B}:]SIG[@TIME] as SLURM's get_signal_opts. ValueError when invalid."""
    batch = False
    if spec[:1].upper() == "R":
        spec = spec[1:]
    if spec[:1].upper() == "B":
        batch, spec = True, spec[1:]
    if spec[:1].upper() == "R":
        spec = spec[1:]
    if spec[:1] == ":":
        spec = spec[1:]
    name, at, when = spec.partition("@")
    number = signal_number(name)
    if not 1 <= number <= 0xFFFF or number >= signal.NSIG:
        raise ValueError(spec)
    seconds = 60
    if at:
        match = re.fullmatch(r"\s*([+-]?\d*)", when)
        if not match:
            raise ValueError(spec)
        seconds = int(match.group(1) or 0)
        if not 0 <= seconds <= 0xFFFF:
            raise ValueError(spec)
    return {"signal": number, "time": seconds, "batch": batch}


def directives(script: str) -> list[str]:
    """The words of the script's `#SBATCH` lines (at the start of a line), up to its first command."""
    words: list[str] = []
    for line in script.splitlines():
        if line.startswith("#SBATCH"):
            words += shlex.split(line[len("#SBATCH"):], comments=True)
        elif line.strip() and not line.strip().startswith("#"):
            break
    return words


# --- state ---------------------------------------------------------------------------------------------------

def _file(job_id: str, suffix: str) -> Path:
    return STATE / f"{job_id}{suffix}"


def job(job_id: str) -> dict:
    return json.loads(_file(job_id.split(".")[0], ".json").read_text())


def jobs() -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in STATE.glob("*.json") if p.stem.isdigit()),
                  key=lambda j: int(j["id"]))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.rename(path)


def read_state(job_id: str) -> dict:
    try:
        return json.loads(_file(job_id, ".state").read_text())
    except FileNotFoundError:
        return {"state": "PENDING", "sacct": "PENDING", "restarts": 0, "history": []}


@contextlib.contextmanager
def locked(job_id: str):
    """The job's state, for a read-modify-write that no other command interleaves with."""
    with open(_file(job_id, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        st = read_state(job_id)
        yield st
        _write_json(_file(job_id, ".state"), st)


def _calls() -> list[str]:
    path = STATE / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def _log(line: str) -> None:
    with open(STATE / "calls.log", "a") as f:
        f.write(line + "\n")


def _now_str(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() if when is None else when))


def _set_subreaper() -> None:
    """Orphaned descendants are reparented to this process instead of init (a cgroup's grip, in one call)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


# --- processes -----------------------------------------------------------------------------------------------

def processes() -> dict[int, tuple[int, int, int, int]]:
    """pid -> (ppid, pgid, sid, start time) of every live process (zombies left out)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
    return table


def start_time(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        data = Path(f"/proc/{pid}/stat").read_bytes()
        return int(data[data.rindex(b")") + 2:].split()[19])
    return None


def descendants(table: dict, roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def members(table: dict, leaders: dict[int, int | None]) -> set[int]:
    """Processes in the process groups or sessions that the leaders (pid: start time) opened: a task's, the
    batch shell's. A leader's number stays taken while its group or session has members; one that a new
    process took (another start time) leads nothing of ours."""
    ours = {pid for pid, started in leaders.items() if pid not in table or table[pid][3] == started}
    return {pid for pid, (_ppid, pgid, sid, _start) in table.items() if pgid in ours or sid in ours}


def exited_children() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of every child that has exited, without blocking; reaps them (orphans too: the
    caller is a subreaper)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def _kill(pids, sig: int) -> None:
    for pid in pids:
        if pid > 1 and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _alive(table: dict, pid: int, started: int | None) -> bool:
    return pid in table and (started is None or table[pid][3] == started)


def _status_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _exit_field(status: int | None) -> str:
    """sacct's ExitCode: code:signal."""
    if status is None:
        return "0:0"
    code = os.waitstatus_to_exitcode(status)
    return f"{code}:0" if code >= 0 else f"0:{-code}"


def steps(job_id: str, table: dict) -> list[dict]:
    """The job's running steps: their srun, task processes (signals other than SIGKILL go to these) and every
    process of the step (the tasks' descendants, sessions and process groups, and srun's orphans)."""
    found = []
    for path in sorted(_file(job_id, ".steps").glob("*.json")):
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            reg = json.loads(path.read_text())
            srun_pid, srun_start = reg["srun"]
            leaders = {pid: start for pid, start, _node, _rank in reg["tasks"]}
            tasks = {pid for pid, start, _node, _rank in reg["tasks"] if _alive(table, pid, start)}
            roots = tasks | ({srun_pid} if _alive(table, srun_pid, srun_start) else set())
            procs = (descendants(table, roots) | tasks | members(table, leaders)) - {srun_pid, os.getpid()}
            found.append({"step": reg["step"], "srun": srun_pid, "tasks": tasks, "procs": procs,
                          "hosts": reg["hosts"]})
    return found


# --- commands --------------------------------------------------------------------------------------------------

def sbatch(args: list[str]) -> int:
    opts, rest = parse(args, "sbatch")
    if "wrap" in opts:
        if rest:
            return _error("sbatch: error: script arguments not permitted with --wrap option")
        script = "#!/bin/sh\n" + opts["wrap"] + "\n"
    else:
        path = rest[0] if rest else "-"  # no script file: the script comes on stdin
        try:
            script = sys.stdin.read() if path in ("-", "/dev/stdin") else Path(path).read_text()
        except OSError as exc:
            return _error(f"sbatch: error: Unable to open file {path}: {exc.strerror}")
        if not script.startswith("#!"):
            return _error("sbatch: error: This does not look like a batch script.  The first\n"
                          "sbatch: error: line must start with #! followed by the path to an interpreter.\n"
                          "sbatch: error: For instance: #!/bin/sh")
        script_opts, _ = parse(directives(script), "sbatch")
        opts = {**script_opts, **opts}  # the command line wins over #SBATCH
    for key, value in opts.items():  # as strict as the real one: a quoted 'A B' word is one option
        if key not in SBATCH_OPTIONS:
            return _error(f"sbatch: unrecognized option '--{key}'")
        if key in SBATCH_NUMERIC and not value.isdigit():
            return _error(f'sbatch: error: Invalid numeric value "{value}" for --{key}.')
    try:
        limit = time_minutes(opts["time"]) if "time" in opts else None
    except ValueError:
        return _error("sbatch: error: Invalid --time specification")
    try:
        warn = parse_signal(opts["signal"]) if "signal" in opts else None
    except ValueError:
        return _error("sbatch: error: Invalid --signal specification")
    if opts.get("open-mode", "truncate") not in ("append", "truncate"):
        return _error(f"sbatch: error: Invalid --open-mode argument: {opts['open-mode']}")
    requeue = _env_flag("FAKE_SLURM_REQUEUE_DEFAULT", True)  # JobRequeue, applied at submission
    for word in ([] if "wrap" in opts else directives(script)) + args[: len(args) - len(rest)]:
        if word == "--no-requeue":  # the last one wins, the command line after #SBATCH
            requeue = False
        elif word == "--requeue" or word.startswith("--requeue="):
            requeue = True

    with open(STATE / "next_id", "a+") as counter:  # the plugin submits from two threads
        fcntl.flock(counter, fcntl.LOCK_EX)
        counter.seek(0)
        job_id = counter.read().strip() or "1000"
        counter.truncate(0)
        counter.write(str(int(job_id) + 1))
    nodes = int(opts.get("nodes", 1))
    workdir = Path(opts.get("chdir", os.getcwd()))
    name = opts.get("job-name", "wrap" if "wrap" in opts else Path(rest[0]).name if rest else "sbatch")
    script_path = _file(job_id, ".sh")
    script_path.write_text(script)
    script_path.chmod(0o700)

    def pattern(value: str) -> str:
        return (value.replace("%%", "\0").replace("%j", job_id).replace("%x", name)
                .replace("%u", os.environ.get("USER", "root")).replace("\0", "%"))

    output = workdir / pattern(opts.get("output", "slurm-%j.out"))
    info = {"id": job_id, "name": name, "argv": args, "options": opts, "nodes": nodes,
            "ntasks": int(opts.get("ntasks", nodes)), "nodelist": hostlist(nodes), "workdir": str(workdir),
            "output": str(output), "error": str(workdir / pattern(opts["error"])) if "error" in opts else None,
            "time_limit": limit, "signal": warn, "requeue": requeue, "script_args": rest[1:],
            "open_mode": opts.get("open-mode", "truncate"), "submitted": time.time(), "pid": None}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # --export=ALL
    env.update({
        "SLURM_JOB_ID": job_id, "SLURM_JOBID": job_id, "SLURM_JOB_NAME": info["name"],
        "SLURM_JOB_NODELIST": info["nodelist"], "SLURM_NODELIST": info["nodelist"],
        "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NTASKS": str(info["ntasks"]),
        "SLURM_CPUS_PER_TASK": opts.get("cpus-per-task", "1"), "SLURM_SUBMIT_DIR": os.getcwd(),
        "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURMD_NODENAME": expand(info["nodelist"])[0],
        "SLURM_CLUSTER_NAME": "fake", "SLURM_JOB_PARTITION": opts.get("partition", "gpu"),
    })
    if "account" in opts:
        env["SLURM_JOB_ACCOUNT"] = opts["account"]
    _write_json(_file(job_id, ".env.json"), env)
    _write_json(_file(job_id, ".state"), {"state": "PENDING", "sacct": "PENDING", "restarts": 0, "history": [],
                                          "eligible": time.time(), "requests": []})
    info["pid"] = _start_controller(job_id)
    _write_json(_file(job_id, ".json"), info)
    print(job_id if "parsable" in opts else f"Submitted batch job {job_id}")
    return 0


def _start_controller(job_id: str) -> int:
    with open(_file(job_id, ".controller.log"), "a") as log:
        proc = subprocess.Popen([sys.executable, str(HERE), "_controller", job_id], start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=STATE)
    return proc.pid


def _states(args: dict) -> set[str] | None:
    wanted = args.get("states", args.get("state"))
    if not wanted or wanted.lower() == "all":
        return None if wanted else set(ACTIVE)
    names = {code: name for name, code in COMPACT.items()}
    return {names.get(s.upper(), s.upper()) for s in wanted.split(",")}


def _visible(info: dict, opts: dict) -> bool:
    names = opts.get("name", opts.get("jobname"))
    ids = opts.get("jobs")
    return ((names is None or info["name"] in names.split(","))
            and (ids is None or info["id"] in [i.split(".")[0] for i in ids.split(",")]))


def _elapsed(st: dict) -> str:
    if not st.get("start"):
        return "00:00:00"
    seconds = int((st.get("finished") or time.time()) - st["start"])
    days, rest = divmod(seconds, 86400)
    return (f"{days}-" if days else "") + time.strftime("%H:%M:%S", time.gmtime(rest))


def _limit(info: dict) -> str:
    minutes = info.get("time_limit")
    if minutes is None:
        return "UNLIMITED"
    days, rest = divmod(minutes, 1440)
    return (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"


def sacct(args: list[str]) -> int:
    opts, _ = parse(args, "sacct")
    fields = opts.get("format", "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode").split(",")
    header = not ({"noheader", "n"} & set(opts))
    parsable = {"parsable2", "P", "parsable", "p"} & set(opts)
    if "jobs" in opts and "." in opts["jobs"]:
        return 0  # a step: its Reason (none kept)
    rows = []
    for info in jobs():
        if not _visible(info, opts):
            continue
        st = read_state(info["id"])
        records = (st.get("history", []) if {"duplicates", "D"} & set(opts) else []) + [st]
        for rec in records:
            values = {"jobidraw": info["id"], "jobid": info["id"], "state": rec["sacct"],
                      "jobname": info["name"], "nodelist": info["nodelist"] if rec.get("start") else "None assigned",
                      "nnodes": str(info["nodes"]), "account": info["options"].get("account", ""),
                      "comment": info["options"].get("comment", ""), "exitcode": rec.get("exit") or "0:0",
                      "partition": info["options"].get("partition", "gpu"), "timelimit": _limit(info),
                      "start": _now_str(rec["start"]) if rec.get("start") else "Unknown",
                      "end": _now_str(rec["finished"]) if rec.get("finished") else "Unknown",
                      "elapsed": _elapsed(rec), "reason": rec.get("reason", "None"), "alloccpus": "1",
                      "restarts": str(st.get("restarts", 0)), "submit": _now_str(info["submitted"])}
            rows.append([values.get(f.split("%")[0].lower(), "") for f in fields])
    if parsable:
        end = "" if {"parsable2", "P"} & set(opts) else "|"
        if header:
            print("|".join(f.split("%")[0] for f in fields) + end)
        for row in rows:
            print("|".join(row) + end)
    else:
        if header:
            print(" ".join(f"{f.split('%')[0]:>12}" for f in fields))
        for row in rows:
            print(" ".join(f"{v:>12}" for v in row))
    return 0


def squeue(args: list[str]) -> int:
    opts, _ = parse(args, "squeue")
    wanted = _states(opts)
    fmt = opts.get("format", "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R")
    lines = []
    for info in jobs():
        st = read_state(info["id"])
        state = st["state"]
        if not _visible(info, opts) or (wanted is not None and state not in wanted):
            continue
        if state not in ACTIVE and time.time() - (st.get("finished") or 0) > MIN_JOB_AGE:
            continue  # purged from slurmctld
        values = {"i": info["id"], "A": info["id"], "T": state, "t": COMPACT.get(state, state), "j": info["name"],
                  "N": info["nodelist"] if state != "PENDING" else "", "D": str(info["nodes"]),
                  "P": info["options"].get("partition", "gpu"), "u": os.environ.get("USER", "root"),
                  "M": _elapsed(st), "l": _limit(info), "r": st.get("reason", "None"),
                  "R": info["nodelist"] if state == "RUNNING" else f"({st.get('reason', 'None')})"}
        lines.append(re.sub(r"%[.\-]?\d*([a-zA-Z])", lambda m, values=values: values.get(m.group(1), ""), fmt))
    if not ({"noheader", "h"} & set(opts)):
        heads = {"i": "JOBID", "A": "JOBID", "T": "STATE", "t": "ST", "j": "NAME", "N": "NODELIST", "D": "NODES",
                 "P": "PARTITION", "u": "USER", "M": "TIME", "l": "TIME_LIMIT", "r": "REASON",
                 "R": "NODELIST(REASON)"}
        print(re.sub(r"%[.\-]?\d*([a-zA-Z])", lambda m: heads.get(m.group(1), ""), fmt))
    if lines:
        print("\n".join(lines))
    return 0


def _job_ids(words: list[str]) -> list[str]:
    ids = []
    for word in words:
        word = re.sub(r"^(jobid|job)=", "", word, flags=re.IGNORECASE)
        ids += [part for part in word.split(",") if part]
    return ids


def scancel(args: list[str]) -> int:
    """scancel JOB... [--signal=SIG [-b|-f]]: without a signal, end the job as SLURM does (state `CANCELLED by
    UID`, SIGCONT+SIGTERM to the batch shell and the steps' tasks, SIGKILL after KillWait)."""
    opts: dict[str, str] = {}
    words: list[str] = []
    short = {**SHORT, **SHORT_BY_COMMAND["scancel"]}
    i = 0
    while i < len(args):  # options and job ids in any order (the plugin puts --clusters=all last)
        word = args[i]
        if word.startswith("--") and "=" in word:
            key, value = word[2:].split("=", 1)
            opts[key] = value
        elif word in FLAGS["scancel"]:
            opts[short.get(word, word.lstrip("-"))] = "1"
        elif word.startswith("-"):
            if word[:2] in short and len(word) > 2 and not word.startswith("--"):
                opts[short[word[:2]]] = word[2:]
            else:
                opts[short.get(word, word.lstrip("-"))] = args[i + 1] if i + 1 < len(args) else ""
                i += 1
        else:
            words.append(word)
        i += 1
    sig = signal_number(opts["signal"]) if "signal" in opts else signal.SIGKILL
    if not sig:
        return _error(f"scancel: error: Invalid job signal: {opts['signal']}")
    rc = 0
    for job_id in _job_ids(words):
        if "." in job_id or not _file(job_id, ".json").exists():
            rc = _error(f"scancel: error: Kill job error on job id {job_id}: Invalid job id specified")
            continue
        with locked(job_id) as st:
            if st["state"] not in ACTIVE:
                continue  # Job/step already completing or completed: silent, as scancel without -v
            if sig != signal.SIGKILL or "batch" in opts:
                if st["state"] != "RUNNING":
                    rc = _error(f"scancel: error: Kill job error on job id {job_id}: "
                                "Job/step already completing or completed" if st["state"] == "COMPLETING"
                                else f"scancel: error: Kill job error on job id {job_id}: Job is pending execution")
                    continue
                target = "full" if "full" in opts else "batch-shell" if "batch" in opts else "steps"
                st.setdefault("requests", []).append({"signal": sig, "target": target})
                continue
            _cancel(job_id, st, os.getuid())
    return rc


def _cancel(job_id: str, st: dict, uid: int) -> None:
    _file(job_id, ".cancelled").touch()
    if st["state"] == "PENDING":
        st.update(state="CANCELLED", sacct=f"CANCELLED by {uid}", finished=time.time(), final="CANCELLED")
        _log(f"state {job_id} CANCELLED")
    elif st["state"] == "RUNNING":
        st.update(state="COMPLETING", sacct=f"CANCELLED by {uid}", final="CANCELLED", why="cancel")
        _log(f"state {job_id} CANCELLED")


def scontrol(args: list[str]) -> int:
    what = " ".join(args[:2])
    if what == "show hostnames":
        nodelist = args[2] if len(args) > 2 else os.environ.get("SLURM_JOB_NODELIST", "")
        print("\n".join(expand(nodelist)))
    elif what == "show config":
        print(f"Configuration data as of now\nClusterName             = fake\nJobRequeue              = "
              f"{int(_env_flag('FAKE_SLURM_REQUEUE_DEFAULT', True))}\n"
              f"KillWait                = {KILL_WAIT:g} sec\nMaxArraySize            = 1001\n"
              "MinJobAge               = 300 sec\nProctrackType           = proctrack/cgroup\n"
              "SelectType              = select/cons_tres")
    elif what == "show partition":
        print("PartitionName=gpu\n   Default=YES MaxNodes=UNLIMITED MaxTime=UNLIMITED\n   State=UP TotalNodes=8")
    elif what == "show job":
        return _show_job(_job_ids(args[2:]) or [os.environ.get("SLURM_JOB_ID", "")])
    elif args[:1] == ["requeue"]:  # scontrol requeue [Incomplete] JOB[,JOB...]
        return _requeue(_job_ids([a for a in args[1:] if a.lower() != "incomplete" and not a.startswith("-")]))
    else:
        print(f"scontrol (fake): {what}: not implemented", file=sys.stderr)
        return 1
    return 0


def _show_job(ids: list[str]) -> int:
    for job_id in ids:
        if not _file(job_id, ".json").exists():
            return _error("slurm_load_jobs error: Invalid job id specified")
        info, st = job(job_id), read_state(job_id)
        print(f"JobId={job_id} JobName={info['name']}\n"
              f"   JobState={st['state']} Reason={st.get('reason', 'None')} Dependency=(null)\n"
              f"   Requeue={int(info['requeue'])} Restarts={st.get('restarts', 0)} BatchFlag=1 "
              f"ExitCode={st.get('exit') or '0:0'}\n"
              f"   RunTime={_elapsed(st)} TimeLimit={_limit(info)}\n"
              f"   NodeList={info['nodelist']} NumNodes={info['nodes']} NumTasks={info['ntasks']}\n"
              f"   WorkDir={info['workdir']}\n   StdOut={info['output']}\n")
    return 0


def _requeue(ids: list[str]) -> int:
    """scontrol requeue: the job's current run ends (its processes get SIGCONT+SIGTERM, SIGKILL after KillWait)
    and the batch script runs again under the same id; refused for a job that may not be requeued."""
    rc = 0
    if not ids:
        return 1
    for job_id in ids:
        if not _file(job_id, ".json").exists():
            rc = _error(f"Invalid job id specified for job {job_id}")
            continue
        info = job(job_id)
        respawn = False
        with locked(job_id) as st:
            if not info["requeue"]:
                rc = _error(f"Requested operation is presently disabled for job {job_id}")
            elif st["state"] == "PENDING":
                rc = _error(f"Job is pending execution for job {job_id}")
            elif st.get("requeue"):
                pass  # already on its way back
            elif st["state"] in ("RUNNING", "COMPLETING"):
                if st["state"] == "RUNNING":
                    st.update(state="COMPLETING", sacct="REQUEUED", why="requeue")
                st.update(requeue=True, restarts=st.get("restarts", 0) + 1)
                _log(f"state {job_id} REQUEUED")
            else:  # a finished job comes back too
                st["history"] = st.get("history", []) + [_record(st)]
                st.update(state="PENDING", sacct="PENDING", restarts=st.get("restarts", 0) + 1, requeue=False,
                          eligible=time.time() + REQUEUE_DELAY, start=None, finished=None, exit=None,
                          requests=[], preempt=None, why=None, final=None)
                _file(job_id, ".rc").unlink(missing_ok=True)
                _log(f"state {job_id} PENDING")
                respawn = True
        if respawn:
            info["pid"] = _start_controller(job_id)
            _write_json(_file(job_id, ".json"), info)
    return rc


def _record(st: dict) -> dict:
    return {key: st.get(key) for key in ("sacct", "start", "finished", "exit", "reason")}


def fake_preempt(args: list[str]) -> int:
    """fake-preempt JOB: preempt a running job as slurmctld does with GraceTime (FAKE_SLURM_GRACE_TIME) and
    PreemptMode (FAKE_SLURM_PREEMPT_MODE: requeue or cancel)."""
    mode = os.environ.get("FAKE_SLURM_PREEMPT_MODE", "requeue").lower()
    if mode not in ("requeue", "cancel"):
        return _error(f"fake-preempt: FAKE_SLURM_PREEMPT_MODE={mode}: requeue or cancel")
    grace = _env_float("FAKE_SLURM_GRACE_TIME", 5.0)
    rc = 0
    for job_id in _job_ids(args):
        if not _file(job_id, ".json").exists():
            rc = _error(f"fake-preempt: error: Invalid job id specified: {job_id}")
            continue
        with locked(job_id) as st:
            if st["state"] != "RUNNING":
                rc = _error(f"fake-preempt: job {job_id} is not running ({st['state']})")
            elif not st.get("preempt"):
                st["preempt"] = {"mode": mode, "grace": grace, "at": time.time()}
    return rc


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
            return _error("srun: error: fake SLURM runs srun only in a job (no SLURM_JOB_ID, no --jobid)")
        if not self.command:
            return _error("srun: fatal: No command given to execute.")
        info = job(job_id)
        if read_state(info["id"])["state"] != "RUNNING":
            return _error(f"srun: error: Unable to create step for job {info['id']}: "
                          "Job/step already completing or completed")
        self.job_id = info["id"]
        hosts = expand(info["nodelist"])[: int(opts.get("nodes", info["nodes"]))]
        ntasks = int(opts.get("ntasks", len(hosts) * int(opts.get("ntasks-per-node", 1))))
        per_node = -(-ntasks // len(hosts))
        self.step = self._next_step()
        _log(f"srun {self.job_id} {self.step} ntasks={ntasks} nodes={len(hosts)} {shlex.join(self.args)}")
        kill_on_bad_exit = opts.get("kill-on-bad-exit", "1" if _env_flag("FAKE_SLURM_KILL_ON_BAD_EXIT", True)
                                    else "0") not in ("0", "")
        _set_subreaper()
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
        self.registry = _file(self.job_id, ".steps") / f"{self.step}.json"
        self.registry.parent.mkdir(exist_ok=True)
        _write_json(self.registry, {"step": self.step, "srun": [os.getpid(), start_time(os.getpid())],
                                    "hosts": hosts,
                                    "tasks": [[pid, self.started[pid], node, rank] for pid, node, rank in self.tasks]})
        try:
            return self._supervise(kill_on_bad_exit)
        finally:
            self.registry.unlink(missing_ok=True)

    def _next_step(self) -> int:
        with open(_file(self.job_id, ".nextstep"), "a+") as counter:
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
        _kill(self._procs(processes()) if sig == signal.SIGKILL or SIGNAL_CHILDREN else self._tasks(), sig)

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
                    _kill(self._procs(table, node), signal.SIGKILL)
                    cleaned.add(node)
                if len(cleaned) == len(self.hosts):
                    leftovers = self._procs(table)
                    if not leftovers:
                        break
                    _kill(leftovers, signal.SIGKILL)
            failed = [p for p, s in self.status.items() if os.waitstatus_to_exitcode(s) != 0]
            if kill_on_bad_exit and failed and term_kill_at is None and self._tasks():
                for host in sorted({self.hosts[n] for p, n, _r in self.tasks if p in self._tasks()}):
                    print(f"slurmstepd: error: *** STEP {self.job_id}.{self.step} ON {host} CANCELLED AT "
                          f"{_now_str()} DUE TO TASK FAILURE ***", file=sys.stderr, flush=True)
                _kill(self._tasks(), signal.SIGCONT)
                self._kill_all(signal.SIGTERM)
                term_kill_at = time.monotonic() + KILL_WAIT
            if term_kill_at is not None and time.monotonic() >= term_kill_at:
                self._kill_all(signal.SIGKILL)
            time.sleep(TICK)
        self._reap()
        codes = [os.waitstatus_to_exitcode(s) for s in self.status.values()]
        signalled = [-c for c in codes if c < 0]
        return 128 + max(signalled) if signalled else max(codes, default=0)


class Controller:
    """The job: runs its batch script (again after each requeue) and does what slurmctld and slurmstepd do to
    it (time limit, --signal, scancel, scontrol requeue, preemption), then records its final state."""

    def __init__(self, job_id: str):
        self.id = job_id
        self.info = job(job_id)
        self.pending_cancel = False

    def log(self, line: str) -> None:
        _log(line)

    def main(self) -> int:
        _set_subreaper()
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
                    _cancel(self.id, st, os.getuid())
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
        _kill(pids, sig)
        self.log(f"signal {self.id} {signal.Signals(sig).name} {target}")

    def message(self, reason: str) -> None:
        """What each slurmstepd of the job prints into the output when the job is ended."""
        when = _now_str()
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
        for stale in _file(self.id, ".steps").glob("*.json"):
            stale.unlink(missing_ok=True)
        _file(self.id, ".nextstep").unlink(missing_ok=True)
        now = time.time()
        limit = info["time_limit"] * SECONDS_PER_MINUTE if info["time_limit"] else None
        with locked(self.id) as st:
            st.update(state="RUNNING", sacct="RUNNING", start=now, end=now + limit if limit else None,
                      finished=None, exit=None, requeue=False, why=None, final=None, preempt=None,
                      requests=[], reason="None")
            restarts = st.get("restarts", 0)
        self.log(f"state {self.id} RUNNING restarts={restarts}")
        end = now + limit if limit else None
        env = json.loads(_file(self.id, ".env.json").read_text())
        env["SLURM_RESTART_COUNT"] = str(restarts)
        env["SLURM_JOB_START_TIME"] = str(int(now))
        if end:
            env["SLURM_JOB_END_TIME"] = str(int(end))
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if info["open_mode"] == "append" else os.O_TRUNC)
        workdir = Path(info["workdir"])
        self.out_fd = os.open(info["output"], flags, 0o644)
        err_fd = os.open(info["error"], flags, 0o644) if info.get("error") else self.out_fd
        try:
            shell = subprocess.Popen([str(_file(self.id, ".sh")), *info.get("script_args", [])], cwd=workdir,
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
        warn_at = end - warn["time"] * SECONDS_PER_MINUTE / 60 if warn and end else None
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
                    _cancel(self.id, st, os.getuid())
            if read_state(self.id).get("requests"):  # scancel --signal
                with locked(self.id) as st:
                    requests, st["requests"] = st.get("requests", []), []
                for request in requests if phase == "running" else []:
                    self.deliver(request["signal"], request["target"])
            st = read_state(self.id)

            if phase == "running":
                if st["state"] == "COMPLETING":  # scancel, scontrol requeue
                    phase, kill_at = "terminating", self.terminate(st["why"])
                    continue
                if warn_at is not None and now >= warn_at:  # --signal
                    target = "batch-shell" if warn["batch"] else "steps"
                    self.deliver(signal.SIGCONT, target)
                    self.deliver(warn["signal"], target)
                    warn_at = None
                preempt = st.get("preempt")
                if preempt and not preempt_started:
                    preempt_started = True
                    self.log(f"preempt {self.id} mode={preempt['mode']} grace={preempt['grace']:g}")
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
                                  exit=_exit_field(self.shell_status),
                                  reason="None" if final == "COMPLETED" else "NonZeroExitCode")
                    self.log(f"state {self.id} {final}")
                    table = processes()
                    step_list = self.step_list(table)
                    _kill(self.batch_procs(table, step_list), signal.SIGKILL)  # the batch step's leftovers
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
                            st["exit"] = st.get("exit") or _exit_field(self.shell_status)
                    rc_written = True
                left = self.job_procs()
                if not left and (self.shell_status is not None or shell is None):
                    return self.finish()
                if now >= kill_at:
                    if killed_at is None:
                        killed_at = now
                        self.deliver(signal.SIGKILL, "all")
                    else:
                        _kill(left, signal.SIGKILL)
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
            path = _file(self.id, ".rc")
            path.with_suffix(".rc.tmp").write_text(f"{_status_code(self.shell_status)}\n")
            path.with_suffix(".rc.tmp").rename(path)

    def finish(self) -> str:
        with locked(self.id) as st:
            st["batch_pid"] = None
            if st.get("requeue"):  # batch_requeue_fini: pending again, a new accounting record
                st["history"] = st.get("history", []) + [{**_record(st), "finished": time.time(),
                                                          "exit": st.get("exit") or _exit_field(self.shell_status)}]
                st.update(state="PENDING", sacct="PENDING", start=None, finished=None, exit=None, requeue=False,
                          eligible=time.time() + REQUEUE_DELAY, why=None, final=None, preempt=None,
                          reason="BeginTime")
                _file(self.id, ".rc").unlink(missing_ok=True)
                self.log(f"state {self.id} PENDING")
                return "requeue"
            st.update(state=st.get("final") or "COMPLETED", finished=time.time())
            if not st.get("exit"):
                st["exit"] = _exit_field(self.shell_status)
        self.log(f"ended {self.id} {st['state']}")
        return "done"


def _controller(args: list[str]) -> int:
    return Controller(args[0]).main()


def sinfo(args: list[str]) -> int:
    opts, _ = parse(args, "sinfo")
    print("PARTITION\ngpu*" if "%P" in (opts.get("output"), opts.get("format")) else
          "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST\ngpu*         up   infinite      8   idle 127.0.0.[1-8]")
    return 0


def sacctmgr(args: list[str]) -> int:
    print(os.environ.get("FAKE_SLURM_ACCOUNTS", "tsm"))  # `sacctmgr -n -s list user U format=account`
    return 0


COMMANDS = {"sbatch": sbatch, "sacct": sacct, "squeue": squeue, "scancel": scancel, "scontrol": scontrol,
            "srun": srun, "sinfo": sinfo, "sacctmgr": sacctmgr, "fake-preempt": fake_preempt,
            "_controller": _controller}


def main() -> int:
    name, args = sys.argv[1], sys.argv[2:]
    STATE.mkdir(parents=True, exist_ok=True)
    if name not in ("srun", "_controller"):
        _log(f"{name} {shlex.join(args)}")
    return COMMANDS[name](args)


if __name__ == "__main__":
    sys.exit(main())
