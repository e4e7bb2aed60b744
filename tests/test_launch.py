"""The multi-node launcher and the mpirun variable mapping (SLURM's scontrol is a small script on PATH)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_CONFIG
from tsm.config import TsmError
from tsm.launch import Geometry, accelerate_command, map_mpi_environment, slurm_geometry


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
    cmd = accelerate_command(g, ["--config", "c.yaml"], cpu_threads_per_process=6)
    joined = " ".join(cmd)
    for part in ("--multi_gpu", "--num_machines 3", "--machine_rank 2", "--main_process_ip gpu07",
                 "--main_process_port 29555", "--num_processes 24", "--num_cpu_threads_per_process 6",
                 "-m tsm.train --config c.yaml"):
        assert part in joined


def test_nodes_flag_wins_over_stripped_environment(fake_scontrol):
    # the rule's shell sees almost no SLURM_* variables: --nodes gives the count
    g = slurm_geometry({"SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "gpu[07-09]"}, 3, 8, 29500)
    assert g.num_machines == 3


@pytest.mark.parametrize("env, fragment", [
    ({"SLURM_JOB_NODELIST": "gpu[07-09]"}, "SLURM_NODEID not set"),
    ({"SLURM_NODEID": "5", "SLURM_JOB_NODELIST": "gpu[07-09]", "SLURM_JOB_NUM_NODES": "3"}, "outside 0..2"),
])
def test_slurm_errors(fake_scontrol, env, fragment):
    with pytest.raises(TsmError, match=fragment):
        slurm_geometry(env, None, 8, 29500)


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


@pytest.mark.slow
def test_two_fake_nodes_on_loopback(fake_scontrol, tmp_path, corpus):
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
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert "node 1/2, main 127.0.0.1:29617, 2 processes" in outputs[1]
    log = (out / "training.log").read_text()
    assert "(2 processes" in log and "Step 4/4" in log
    assert (Path(out) / "final-checkpoint" / "model.safetensors").is_file()
