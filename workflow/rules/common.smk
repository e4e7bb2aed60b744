# Helpers shared by the rules: paths under results/{run}/ and the training launch command.
import os
import shlex

RUN = config["run"]
RESULTS = f"results/{RUN}"


def final_model(stage):
    return f"{RESULTS}/{stage}/final-checkpoint"


def launch_command(processes):
    """`accelerate launch` with real ranks: on CPU, --multi_gpu plus ACCELERATE_USE_CPU gives gloo ranks
    (`--cpu --num_processes N` would start only one process)."""
    launch = config["launch"]
    prefix = "ACCELERATE_USE_CPU=true " if launch["use_cpu"] else ""
    multi = "--multi_gpu " if processes > 1 else ""
    # Ranks x threads must not exceed the cores: oversubscribed ranks wait on each other in every all-reduce.
    return (
        f"{prefix}accelerate launch {multi}--num_processes {processes} --num_machines 1 "
        f"--num_cpu_threads_per_process {launch['cpu_threads_per_process']} "
        f"--mixed_precision no --dynamo_backend no -m tsm.train"
    )


def overrides(stage):
    return " ".join(
        f"--set {shlex.quote(f'{key}={value}')}" for key, value in config[stage].get("overrides", {}).items()
    )
