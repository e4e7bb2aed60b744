# Helpers shared by the rules: paths under results/{run}/, the models of the run, the training launch.
import os
import shlex

RUN = config["run"]
RESULTS = f"results/{RUN}"
BENCHMARK = config["benchmark"]["config"]
BENCHMARK_DATA = f"{RESULTS}/data/benchmarks"
# The trained models of this run: two pretraining stages, or one fine-tuning stage.
STAGES = ["finetune"] if config["mode"] == "finetune" else ["stage1", "stage2"]


def final_model(stage):
    return f"{RESULTS}/{stage}/final-checkpoint"


def training_data():
    return f"{RESULTS}/data/train" if config["data"]["source"] == "synth" else f"{RESULTS}/data/hub-train"


def launch_command(wildcards):
    """Start the trainer's ranks. local: `accelerate launch` on this machine (on CPU, --multi_gpu plus
    ACCELERATE_USE_CPU gives real gloo ranks; `--cpu --num_processes N` would start one). slurm: one
    `tsm launch` per node through srun, which works out machine rank and main address from the job."""
    launch = config["launch"]
    if launch["mode"] == "slurm":
        nodes = int(os.environ.get("TSM_SLURM_NODES", launch["nodes"]))
        # The inner srun does not inherit --cpus-per-task (a known plugin issue): pass it, or each node's
        # launcher runs on one core and starves the data workers.
        return (
            f"srun --ntasks-per-node=1 --cpus-per-task={training_threads()} tsm launch --nodes {nodes} "
            f"--gpus-per-node {launch['processes_per_node']} "
            f"--cpu-threads-per-process {launch['cpu_threads_per_process']} --"
        )
    prefix = "ACCELERATE_USE_CPU=true " if launch["use_cpu"] else ""
    processes = launch["processes_per_node"]
    multi = "--multi_gpu " if processes > 1 else ""
    # Ranks x threads must not exceed the cores: oversubscribed ranks wait on each other in every all-reduce.
    return (
        f"{prefix}accelerate launch {multi}--num_processes {processes} --num_machines 1 "
        f"--num_cpu_threads_per_process {launch['cpu_threads_per_process']} "
        f"--mixed_precision no --dynamo_backend no -m tsm.train"
    )


def training_resources():
    """SLURM geometry of a training job (used by the cluster profile's executor; ignored locally)."""
    launch = config["launch"]
    if launch["mode"] != "slurm":
        return {}
    nodes = int(os.environ.get("TSM_SLURM_NODES", launch["nodes"]))
    gpus = launch["processes_per_node"]
    return {
        "nodes": nodes,
        "tasks": nodes,  # one task per node: each runs `tsm launch`, which starts that node's ranks
        "mpi": "srun",
        "tasks_per_gpu": 0,
        "gres": f"gpu:{gpus}",
        "cpus_per_task": gpus * launch["cpu_threads_per_process"] + 4,
        "mem_mb": 400_000,
        "runtime": int(os.environ.get("TSM_SLURM_TRAIN_MINUTES", 2880)),
        "slurm_extra": "'--ntasks-per-node=1 --exclusive --signal=TERM@300'",
    }


def overrides(stage):
    return " ".join(
        f"--set {shlex.quote(f'{key}={value}')}" for key, value in config[stage].get("overrides", {}).items()
    )


def training_threads():
    launch = config["launch"]
    return launch["processes_per_node"] * launch["cpu_threads_per_process"] + (4 if launch["mode"] == "slurm" else 0)
