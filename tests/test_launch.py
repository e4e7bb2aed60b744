"""The multi-node launcher and the mpirun variable mapping (SLURM's scontrol is a small script on PATH)."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_CONFIG, save_yaml, tiny_config
from tsm.config import TsmError
from tsm.launch import (
    Geometry,
    combined_exit_status,
    main,
    main_port,
    map_mpi_environment,
    rank_environment,
    requeue,
    run_folder,
    run_progress,
    slurm_geometry,
)
from tsm.records import (
    PREEMPTED_EXIT_CODE,
    Leg,
    TrainingSummary,
    park_final_checkpoint,
    restore_parked_final_checkpoint,
    run_has_finished,
)


class ProcessGroups:
    """Starts each process as the leader of a process group of its own, so that the test's teardown ends it and
    everything it started (a supervisor's ranks, their DataLoader workers), however the test ended."""

    def __init__(self) -> None:
        self.leaders: list[subprocess.Popen] = []

    def start(self, command: list[str], **popen_args) -> subprocess.Popen:
        leader = subprocess.Popen(command, start_new_session=True, **popen_args)
        self.leaders.append(leader)
        return leader

    def run(self, command: list[str], timeout: float, **popen_args) -> subprocess.CompletedProcess:
        """As subprocess.run(capture_output=True, text=True), but a timeout leaves the group to the teardown."""
        process = self.start(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_args)
        out, err = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, process.returncode, out, err)

    def end_all(self, grace_s: float = 5.0) -> None:
        """SIGTERM to every group still alive, then SIGKILL to whatever is left after `grace_s`."""
        for leader in self.leaders:
            signal_group(leader, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(group_alive(leader) for leader in self.leaders) and time.monotonic() < deadline:
            time.sleep(0.05)
        for leader in self.leaders:
            signal_group(leader, signal.SIGKILL)
            leader.wait()
            for stream in (leader.stdout, leader.stderr):
                if stream:
                    stream.close()


def signal_group(leader: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has already gone
        os.killpg(leader.pid, signum)


def group_alive(leader: subprocess.Popen) -> bool:
    """Whether any process of the leader's group is still there (the leader is reaped here, else its zombie
    would keep the group alive)."""
    leader.poll()
    try:
        os.killpg(leader.pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def processes():
    """Processes a test starts, each in its own process group, all ended at teardown."""
    groups = ProcessGroups()
    yield groups
    groups.end_all()


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """`scontrol show hostnames LIST` prints one host per line, as SLURM's does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text("#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] || exit 1\n"
                      "case \"$3\" in 'gpu[07-09]') printf 'gpu07\\ngpu08\\ngpu09\\n';; "
                      "*) printf '127.0.0.1\\n127.0.0.1\\n';; esac\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_slurm_geometry_from_the_job(fake_scontrol):
    env = {"SLURM_NODEID": "2", "SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_NUM_NODES": "3"}
    g = slurm_geometry(env, nodes=None, processes_per_machine=8, port=29555)
    assert g == Geometry(num_machines=3, machine_rank=2, main_address="gpu07", main_port=29555,
                         processes_per_machine=8)
    assert g.num_processes == 24
    env = rank_environment(g, 3, {"PATH": "/bin"}, use_cpu=False, threads=6)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                "MASTER_PORT", "OMP_NUM_THREADS", "PATH")} == {
        "RANK": "19", "WORLD_SIZE": "24", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "gpu07",
        "MASTER_PORT": "29555", "OMP_NUM_THREADS": "6", "PATH": "/bin"}
    assert "ACCELERATE_USE_CPU" not in env
    assert rank_environment(g, 0, {}, use_cpu=True, threads=None)["ACCELERATE_USE_CPU"] == "true"


def test_nodes_flag_wins_over_the_job(fake_scontrol):
    # The rule's shell sees few SLURM_* variables, and a job may hold more nodes than the training uses.
    g = slurm_geometry({"SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_NUM_NODES": "3"},
                       2, 8, 29500)
    assert (g.num_machines, g.machine_rank, g.num_processes) == (2, 1, 16)
    with pytest.raises(TsmError, match="--nodes 4 but the job holds 3 node"):
        slurm_geometry({"SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "gpu[07-09]"}, 4, 8, 29500)


def test_one_node_needs_no_slurm_and_a_free_port():
    g = slurm_geometry({}, 1, 2)
    assert (g.num_machines, g.machine_rank, g.main_address, g.num_processes) == (1, 0, "127.0.0.1", 2)
    with socket.socket() as sock:  # the port was free
        sock.bind(("127.0.0.1", g.main_port))
    # Inside a bigger job too: one node's ranks meet on this host, not on the job's first node.
    job = {"SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_ID": "123"}
    assert slurm_geometry(job, 1, 8, 29601).main_address == "127.0.0.1"


def test_nodes_agree_on_the_main_port_without_talking():
    ports = {main_port({"SLURM_JOB_ID": "1234567", "SLURM_NODEID": str(n)}, 4, None) for n in range(4)}
    assert ports == {29500 + 4567}
    assert main_port({"SLURM_JOB_ID": "1234567"}, 4, 31000) == 31000


@pytest.mark.parametrize("env, fragment", [
    ({"SLURM_JOB_NODELIST": "gpu[07-09]"}, "SLURM_NODEID not set"),
    ({"SLURM_NODEID": "5", "SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_NUM_NODES": "3"}, "outside 0..2"),
])
def test_slurm_errors(fake_scontrol, env, fragment):
    with pytest.raises(TsmError, match=fragment):
        slurm_geometry(env, None, 8, 29500)


@pytest.mark.parametrize("statuses, expected", [
    ([0, 0], 0), ([75, 75], 75), ([75, 0], 75), ([1, 75], 1), ([75, -9], 137), ([-15, 3], 143),
])
def test_combined_exit_status(statuses, expected):
    assert combined_exit_status(statuses) == expected
    assert PREEMPTED_EXIT_CODE == 75  # the trainer's status for "preempted, checkpoint written" (tsm.records)


def test_the_help_says_what_the_launcher_starts(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "no torchelastic" in text and f"{PREEMPTED_EXIT_CODE} when it stopped at a signal" in text
    assert "29500 + job id % 10000" in text  # argparse's %-formatting once broke --help here


def test_the_leg_state_is_read_from_the_runs_training_summary(tmp_path):
    """What tsm launch asks between legs, answered from the run folder named by the training arguments."""
    out = tmp_path / "run"
    train_args = ["--config", str(TEST_CONFIG), "--output-dir", str(out)]
    assert run_folder(train_args) == out
    assert not run_has_finished(out) and run_progress(out) is None  # no summary yet
    running = Leg("2030-01-02T03:04:05+00:00", "2030-01-02T03:05:05+00:00", 6, 6, 1.0, "running")
    TrainingSummary(max_steps=12, legs=[running]).write(out)
    assert not run_has_finished(out) and run_progress(out) == (6, 6)
    TrainingSummary(max_steps=12, legs=[Leg(**{**vars(running), "last_step": 12, "status": "finished"})]).write(out)
    assert run_has_finished(out) and run_progress(out) == (6, 12)
    assert run_folder(["--config", str(tmp_path / "missing.yaml")]) is None  # the ranks will say why


def run_supervisor(processes: ProcessGroups, tmp_path: Path, ranks: list[str], grace: float = 30.0) -> subprocess.Popen:
    """A RankSupervisor over small Python "ranks", in a process of its own (it installs signal handlers)."""
    code = (f"import sys; from tsm.launch import RankSupervisor; "
            f"ranks = {ranks!r}; s = RankSupervisor([[sys.executable, '-c', r] for r in ranks], "
            f"[{{'PATH': ''}}] * len(ranks), failure_grace_s={grace}); print(s.run(), flush=True)")
    return processes.start([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)


# A rank that checkpoints on SIGTERM: it writes a file a second later, then exits 75.
CHECKPOINTING_RANK = ("import signal, sys, time, pathlib; stop = []; "
                      "signal.signal(signal.SIGTERM, lambda *a: stop.append(1)); "
                      "pathlib.Path('ready-{r}').touch(); "
                      "[time.sleep(0.1) for _ in iter(lambda: bool(stop), True)]; time.sleep(1); "
                      "pathlib.Path('saved-{r}').touch(); sys.exit(75)")


@pytest.mark.e2e
def test_the_signal_reaches_every_rank_and_the_launcher_waits_for_their_checkpoint(processes, tmp_path):
    proc = run_supervisor(processes, tmp_path, [CHECKPOINTING_RANK.format(r=r) for r in (0, 1)])
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{r}").exists() for r in (0, 1)) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # to the launcher only: it must pass it on
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "[75, 75]", err
    assert (tmp_path / "saved-0").exists() and (tmp_path / "saved-1").exists()
    assert "received SIGTERM" in err and re.search(r"ranks exited \d+ s after SIGTERM", err)


@pytest.mark.e2e
def test_a_failed_rank_stops_the_others(processes, tmp_path):
    stuck = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    started = time.monotonic()
    proc = run_supervisor(processes, tmp_path, ["import sys; sys.exit(3)", stuck], grace=1.0)
    out, err = proc.communicate(timeout=60)
    assert out.strip() == "[3, -9]", err  # the rank stuck in a collective is killed after the grace
    assert time.monotonic() - started < 30
    assert combined_exit_status([3, -9]) == 3


@pytest.fixture
def recording_scontrol(tmp_path, monkeypatch) -> Path:
    """An `scontrol` first on PATH that appends its arguments to the returned file (what requeue asked)."""
    calls, bin_dir = tmp_path / "scontrol.calls", tmp_path / "recording-bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def test_requeue_only_after_progress(recording_scontrol, capsys):
    calls = recording_scontrol
    requeue({"SLURM_JOB_ID": "4242"}, (6, 6))
    assert not calls.exists() and "no progress in this leg (stuck at step 6)" in capsys.readouterr().err
    requeue({}, (0, 6))
    assert not calls.exists()
    requeue({"SLURM_JOB_ID": "4242"}, (6, 12))
    assert calls.read_text() == "requeue 4242\n"


def test_mpirun_variables_are_mapped(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# two nodes\nnode-a slots=8\nnode-b slots=8\n")
    env = {"OMPI_COMM_WORLD_RANK": "9", "OMPI_COMM_WORLD_SIZE": "16", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
           "OMPI_COMM_WORLD_LOCAL_SIZE": "8", "OMPI_MCA_orte_default_hostfile": str(hostfile)}
    assert map_mpi_environment(env)
    assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                "MASTER_PORT")} == {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1",
                                                    "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "node-a",
                                                    "MASTER_PORT": "29500"}


def test_mpirun_mapping_leaves_torchrun_alone_and_needs_an_address_across_nodes():
    assert not map_mpi_environment({"OMPI_COMM_WORLD_RANK": "0", "RANK": "0"})
    assert not map_mpi_environment({})
    one_node = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    assert map_mpi_environment(one_node) and one_node["MASTER_ADDR"] == "127.0.0.1"
    with pytest.raises(TsmError, match="MASTER_ADDR"):
        map_mpi_environment({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4",
                             "OMPI_COMM_WORLD_LOCAL_SIZE": "2"})


@pytest.mark.e2e
def test_two_fake_nodes_on_loopback(processes, fake_scontrol, tmp_path, corpus):
    """Two `tsm launch` processes, as srun starts one per node, train one model over loopback."""
    out = tmp_path / "run"
    procs = []
    for node in (0, 1):
        env = {**os.environ, "SLURM_NODEID": str(node), "SLURM_JOB_NODELIST": "n[1-2]"}
        cmd = [sys.executable, "-m", "tsm.cli", "launch", "--nodes", "2", "--gpus-per-node", "1", "--cpu",
               "--port", "29617", "--", "--config", str(TEST_CONFIG), "--set", f"training_data_paths=[{corpus}]",
               "--set", "probability=null", "--output-dir", str(out), "--max-steps", "4", "--set", "log_steps=2",
               "--context-length", "128", "--prediction-length", "32", "--set", "model.d_model=64",
               "--set", "model.d_ff=128", "--set", "model.d_kv=16"]
        procs.append(processes.start(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert "node 1/2, main 127.0.0.1:29617, 2 processes" in outputs[1]
    log = (out / "training.log").read_text()
    assert "(2 processes" in log and "Step 4/4" in log
    assert (Path(out) / "final-checkpoint" / "model.safetensors").is_file()


@pytest.mark.e2e
def test_the_warning_signal_to_the_whole_step_ends_in_a_checkpoint_exit_75_and_a_requeue(processes, tmp_path, corpus,
                                                                                       recording_scontrol):
    """As slurmstepd delivers `--signal=TERM@T`: SIGTERM to every process of the step (tsm launch, its ranks,
    their workers) at once, periodic saves off. The ranks finish their step and save, tsm launch waits for
    them, exits 75 and requeues the job; the same command then resumes from that checkpoint and finishes."""
    out = tmp_path / "run"
    cfg = save_yaml(tiny_config(corpus, out, save_steps=100000, log_steps=1, dataloader_num_workers=1,
                                max_steps=100000), tmp_path / "cfg.yaml")
    command = [sys.executable, "-m", "tsm.cli", "launch", "--nodes", "1", "--gpus-per-node", "2", "--cpu",
               "--cpu-threads-per-process", "1", "--requeue", "--", "--config", str(cfg)]
    env = {**os.environ, "SLURM_JOB_ID": "4242"}
    log = tmp_path / "launch.log"
    with open(log, "w") as sink:
        proc = processes.start(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not re.search(r"Step ([3-9]|\d\d+)/", log.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)  # the whole step at once
        assert proc.wait(timeout=300) == 75, log.read_text()[-3000:]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # slurmstepd: whatever the task left behind
    saved = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert saved and saved[-1] >= 3, log.read_text()[-3000:]
    assert (out / f"checkpoint-{saved[-1]}" / "model.safetensors").is_file()
    assert recording_scontrol.read_text() == "requeue 4242\n"
    legs = TrainingSummary.read(out).legs
    assert (legs[-1].first_step, legs[-1].last_step, legs[-1].status) == (0, saved[-1], "preempted")

    resumed = processes.run([*command[:-2], "--config", str(cfg), "--max-steps", str(saved[-1] + 2)], env=env,
                            timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    legs = TrainingSummary.read(out).legs
    assert [(leg.first_step, leg.last_step) for leg in legs] == [(0, saved[-1]), (saved[-1], saved[-1] + 2)]

    # The warning signal came as that leg finished: tsm launch parks final-checkpoint (the workflow's job step,
    # signalled too, would fail the job and delete it) and requeues; the job's next leg puts it back, no rank
    # started. Another job's mark is stale and removed.
    weights = (out / "final-checkpoint" / "model.safetensors").read_bytes()
    park_final_checkpoint(out, "4242")
    assert not (out / "final-checkpoint").exists()
    again = processes.run([*command[:-2], "--config", str(cfg), "--max-steps", str(saved[-1] + 2)], env=env,
                          timeout=120)
    assert again.returncode == 0 and "nothing to train" in again.stderr, again.stderr[-3000:]
    assert (out / "final-checkpoint" / "model.safetensors").read_bytes() == weights
    assert len(TrainingSummary.read(out).legs) == 2  # nothing trained
    assert restore_parked_final_checkpoint(out, "4243", 0) is None and not (out / ".finished-at-signal").exists()
