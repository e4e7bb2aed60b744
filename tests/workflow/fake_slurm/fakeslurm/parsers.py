"""SLURM's command-line parsers, as the fake commands need them: options (man sbatch, srun, sacct, squeue,
scancel), `#SBATCH` directives (man sbatch, "DESCRIPTION"), time limits (src/common/parse_time.c:
time_str2mins), --signal (src/common/proc_args.c: get_signal_opts, sig_name2num) and node lists
(src/common/hostlist.c)."""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import signal
import sys

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


def error(message: str) -> int:
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

