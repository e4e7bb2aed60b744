"""The processes of a job as proctrack/cgroup sees them (src/plugins/proctrack/cgroup/proctrack_cgroup.c): every
descendant of a step's tasks, also one that left its session or was orphaned (the fake is a child subreaper,
prctl(2) PR_SET_CHILD_SUBREAPER), read from /proc; and how wait statuses read in sacct and a shell."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from pathlib import Path


def set_subreaper() -> None:
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


def kill(pids, sig: int) -> None:
    for pid in pids:
        if pid > 1 and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def alive(table: dict, pid: int, started: int | None) -> bool:
    return pid in table and (started is None or table[pid][3] == started)


def status_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def exit_field(status: int | None) -> str:
    """sacct's ExitCode: code:signal."""
    if status is None:
        return "0:0"
    code = os.waitstatus_to_exitcode(status)
    return f"{code}:0" if code >= 0 else f"0:{-code}"


