"""The SLURM commands of the fake, each after its man page: sbatch, sacct, squeue, scancel, scontrol (show
hostnames/config/partition/job, requeue), sinfo, sacctmgr (man sbatch, sacct, squeue, scancel, scontrol, sinfo,
sacctmgr); srun is steps.py. Test-only: fake-preempt (slurmctld's preemption, src/slurmctld/preempt.c) and
fake-timeout (the time limit reached now, as src/slurmctld/job_mgr.c's job_time_limit would reach it)."""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

from .controller import run_controller, start_controller
from .parsers import (
    FLAGS,
    SBATCH_NUMERIC,
    SBATCH_OPTIONS,
    SHORT,
    SHORT_BY_COMMAND,
    directives,
    error,
    expand,
    hostlist,
    parse,
    parse_signal,
    signal_number,
    time_minutes,
)
from .settings import KILL_WAIT, MIN_JOB_AGE, REQUEUE_DELAY, STATE, env_flag, env_float, node_environment
from .state import (
    ACTIVE,
    COMPACT,
    accounting_record,
    cancel,
    job,
    job_file,
    jobs,
    locked,
    log_call,
    now_str,
    read_state,
    write_json,
)
from .steps import srun


def sbatch(args: list[str]) -> int:
    opts, rest = parse(args, "sbatch")
    if "wrap" in opts:
        if rest:
            return error("sbatch: error: script arguments not permitted with --wrap option")
        script = "#!/bin/sh\n" + opts["wrap"] + "\n"
    else:
        path = rest[0] if rest else "-"  # no script file: the script comes on stdin
        try:
            script = sys.stdin.read() if path in ("-", "/dev/stdin") else Path(path).read_text()
        except OSError as exc:
            return error(f"sbatch: error: Unable to open file {path}: {exc.strerror}")
        if not script.startswith("#!"):
            return error("sbatch: error: This does not look like a batch script.  The first\n"
                          "sbatch: error: line must start with #! followed by the path to an interpreter.\n"
                          "sbatch: error: For instance: #!/bin/sh")
        script_opts, _ = parse(directives(script), "sbatch")
        opts = {**script_opts, **opts}  # the command line wins over #SBATCH
    for key, value in opts.items():  # as strict as the real one: a quoted 'A B' word is one option
        if key not in SBATCH_OPTIONS:
            return error(f"sbatch: unrecognized option '--{key}'")
        if key in SBATCH_NUMERIC and not value.isdigit():
            return error(f'sbatch: error: Invalid numeric value "{value}" for --{key}.')
    try:
        limit = time_minutes(opts["time"]) if "time" in opts else None
    except ValueError:
        return error("sbatch: error: Invalid --time specification")
    try:
        warn = parse_signal(opts["signal"]) if "signal" in opts else None
    except ValueError:
        return error("sbatch: error: Invalid --signal specification")
    if opts.get("open-mode", "truncate") not in ("append", "truncate"):
        return error(f"sbatch: error: Invalid --open-mode argument: {opts['open-mode']}")
    requeue = env_flag("FAKE_SLURM_REQUEUE_DEFAULT", True)  # JobRequeue, applied at submission
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
    script_path = job_file(job_id, ".sh")
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
    env.update(node_environment())  # the node's own settings win over the submitter's
    write_json(job_file(job_id, ".env.json"), env)
    write_json(job_file(job_id, ".state"), {"state": "PENDING", "sacct": "PENDING", "restarts": 0, "history": [],
                                          "eligible": time.time(), "requests": []})
    info["pid"] = start_controller(job_id)
    write_json(job_file(job_id, ".json"), info)
    print(job_id if "parsable" in opts else f"Submitted batch job {job_id}")
    return 0


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
                      "start": now_str(rec["start"]) if rec.get("start") else "Unknown",
                      "end": now_str(rec["finished"]) if rec.get("finished") else "Unknown",
                      "elapsed": _elapsed(rec), "reason": rec.get("reason", "None"), "alloccpus": "1",
                      "restarts": str(st.get("restarts", 0)), "submit": now_str(info["submitted"])}
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
        return error(f"scancel: error: Invalid job signal: {opts['signal']}")
    rc = 0
    for job_id in _job_ids(words):
        if "." in job_id or not job_file(job_id, ".json").exists():
            rc = error(f"scancel: error: Kill job error on job id {job_id}: Invalid job id specified")
            continue
        with locked(job_id) as st:
            if st["state"] not in ACTIVE:
                continue  # Job/step already completing or completed: silent, as scancel without -v
            if sig != signal.SIGKILL or "batch" in opts:
                if st["state"] != "RUNNING":
                    rc = error(f"scancel: error: Kill job error on job id {job_id}: "
                                "Job/step already completing or completed" if st["state"] == "COMPLETING"
                                else f"scancel: error: Kill job error on job id {job_id}: Job is pending execution")
                    continue
                target = "full" if "full" in opts else "batch-shell" if "batch" in opts else "steps"
                st.setdefault("requests", []).append({"signal": sig, "target": target})
                continue
            cancel(job_id, st, os.getuid())
    return rc


def scontrol(args: list[str]) -> int:
    what = " ".join(args[:2])
    if what == "show hostnames":
        nodelist = args[2] if len(args) > 2 else os.environ.get("SLURM_JOB_NODELIST", "")
        print("\n".join(expand(nodelist)))
    elif what == "show config":
        print(f"Configuration data as of now\nClusterName             = fake\nJobRequeue              = "
              f"{int(env_flag('FAKE_SLURM_REQUEUE_DEFAULT', True))}\n"
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
        if not job_file(job_id, ".json").exists():
            return error("slurm_load_jobs error: Invalid job id specified")
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
        if not job_file(job_id, ".json").exists():
            rc = error(f"Invalid job id specified for job {job_id}")
            continue
        info = job(job_id)
        respawn = False
        with locked(job_id) as st:
            if not info["requeue"]:
                rc = error(f"Requested operation is presently disabled for job {job_id}")
            elif st["state"] == "PENDING":
                rc = error(f"Job is pending execution for job {job_id}")
            elif st.get("requeue"):
                pass  # already on its way back
            elif st["state"] in ("RUNNING", "COMPLETING"):
                if st["state"] == "RUNNING":
                    st.update(state="COMPLETING", sacct="REQUEUED", why="requeue")
                st.update(requeue=True, restarts=st.get("restarts", 0) + 1)
                log_call(f"state {job_id} REQUEUED")
            else:  # a finished job comes back too
                st["history"] = st.get("history", []) + [accounting_record(st)]
                st.update(state="PENDING", sacct="PENDING", restarts=st.get("restarts", 0) + 1, requeue=False,
                          eligible=time.time() + REQUEUE_DELAY, start=None, finished=None, exit=None,
                          requests=[], preempt=None, why=None, final=None)
                job_file(job_id, ".rc").unlink(missing_ok=True)
                log_call(f"state {job_id} PENDING")
                respawn = True
        if respawn:
            info["pid"] = start_controller(job_id)
            write_json(job_file(job_id, ".json"), info)
    return rc


def fake_preempt(args: list[str]) -> int:
    """fake-preempt JOB: preempt a running job as slurmctld does with GraceTime (FAKE_SLURM_GRACE_TIME) and
    PreemptMode (FAKE_SLURM_PREEMPT_MODE: requeue or cancel)."""
    mode = os.environ.get("FAKE_SLURM_PREEMPT_MODE", "requeue").lower()
    if mode not in ("requeue", "cancel"):
        return error(f"fake-preempt: FAKE_SLURM_PREEMPT_MODE={mode}: requeue or cancel")
    grace = env_float("FAKE_SLURM_GRACE_TIME", 5.0)
    rc = 0
    for job_id in _job_ids(args):
        if not job_file(job_id, ".json").exists():
            rc = error(f"fake-preempt: error: Invalid job id specified: {job_id}")
            continue
        with locked(job_id) as st:
            if st["state"] != "RUNNING":
                rc = error(f"fake-preempt: job {job_id} is not running ({st['state']})")
            elif not st.get("preempt"):
                st["preempt"] = {"mode": mode, "grace": grace, "at": time.time()}
    return rc


def fake_timeout(args: list[str]) -> int:
    """fake-timeout JOB...: the running job's time is up now. Its limit moves to now plus its --signal's TIME, so
    the warning goes out now and, unless the job ends first, TIMEOUT comes that TIME later: the timer's own code
    (controller.py) runs, at a moment that a test picks by an event instead of by the clock. Applies to the
    job's current run only (a requeued run starts with its full limit again)."""
    rc = 0
    for job_id in _job_ids(args):
        if not job_file(job_id, ".json").exists():
            rc = error(f"fake-timeout: error: Invalid job id specified: {job_id}")
            continue
        with locked(job_id) as st:
            if st["state"] != "RUNNING":
                rc = error(f"fake-timeout: job {job_id} is not running ({st['state']})")
            elif st.get("time_up") is None:
                st["time_up"] = time.time()
    return rc


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
            "fake-timeout": fake_timeout, "_controller": run_controller}


def main() -> int:
    name, args = sys.argv[1], sys.argv[2:]
    STATE.mkdir(parents=True, exist_ok=True)
    if name not in ("srun", "_controller"):
        log_call(f"{name} {shlex.join(args)}")
    return COMMANDS[name](args)


if __name__ == "__main__":
    sys.exit(main())
