"""What slurmctld and the accounting know of a job (src/slurmctld/job_mgr.c; the states of man squeue "JOB STATE
CODES" and man sacct), kept as files in $FAKE_SLURM_STATE: J.json (sbatch's record), J.env.json, J.state (read
and written under J.lock), J.rc, J.cancelled; and calls.log, the trace of every call and signal."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from .settings import STATE

ACTIVE = ("PENDING", "RUNNING", "COMPLETING")
COMPACT = {"PENDING": "PD", "RUNNING": "R", "COMPLETING": "CG", "COMPLETED": "CD", "CANCELLED": "CA",
           "FAILED": "F", "TIMEOUT": "TO", "PREEMPTED": "PR", "NODE_FAIL": "NF", "REQUEUED": "RQ"}



def job_file(job_id: str, suffix: str) -> Path:
    return STATE / f"{job_id}{suffix}"


def job(job_id: str) -> dict:
    return json.loads(job_file(job_id.split(".")[0], ".json").read_text())


def jobs() -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in STATE.glob("*.json") if p.stem.isdigit()),
                  key=lambda j: int(j["id"]))


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.rename(path)


def read_state(job_id: str) -> dict:
    try:
        return json.loads(job_file(job_id, ".state").read_text())
    except FileNotFoundError:
        return {"state": "PENDING", "sacct": "PENDING", "restarts": 0, "history": []}


@contextlib.contextmanager
def locked(job_id: str):
    """The job's state, for a read-modify-write that no other command interleaves with."""
    with open(job_file(job_id, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        st = read_state(job_id)
        yield st
        write_json(job_file(job_id, ".state"), st)


def log_call(line: str) -> None:
    with open(STATE / "calls.log", "a") as f:
        f.write(line + "\n")


def now_str(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() if when is None else when))


def cancel(job_id: str, st: dict, uid: int) -> None:
    job_file(job_id, ".cancelled").touch()
    if st["state"] == "PENDING":
        st.update(state="CANCELLED", sacct=f"CANCELLED by {uid}", finished=time.time(), final="CANCELLED")
        log_call(f"state {job_id} CANCELLED")
    elif st["state"] == "RUNNING":
        st.update(state="COMPLETING", sacct=f"CANCELLED by {uid}", final="CANCELLED", why="cancel")
        log_call(f"state {job_id} CANCELLED")



def accounting_record(st: dict) -> dict:
    return {key: st.get(key) for key in ("sacct", "start", "finished", "exit", "reason")}

