# Helpers shared by the rules: paths under results/{run}/, the models of the run, the training launch.
# No line here may hold the word rule with a colon after it, or snakemake --lint reports rules mixed with functions.
import os
import shlex

from tsm.hub import is_local_model

RUN = config["run"]
RESULTS = f"results/{RUN}"
BENCHMARK = config["benchmark"]["config"]
BENCHMARK_DATA = f"{RESULTS}/data/benchmarks"
# The trained models of this run: two pretraining stages, or one fine-tuning stage.
STAGES = ["finetune"] if config["mode"] == "finetune" else ["stage1", "stage2"]


def training_data():
    return f"{RESULTS}/data/train" if config["data"]["source"] == "synth" else f"{RESULTS}/data/hub-train"


# The `--set` items every training rule passes before the workflow config's overrides; {data} is the corpus.
TRAINING_SETTINGS = ["training_data_paths=[{data}]", "probability=null"]


def stage_settings(stage):
    """The workflow config's overrides of a stage's training config, as `--set KEY=VALUE` items."""
    return [f"{key}={value}" for key, value in config[stage].get("overrides", {}).items()]


def overrides(stage):
    return " ".join(f"--set {shlex.quote(item)}" for item in stage_settings(stage))


def start_model():
    """finetune mode: the model the fine-tune starts from (the training config's model_id after the workflow
    config's overrides), scored as it is next to the fine-tuned one. None: no start model (pretrain mode,
    or a finetune config with random_init). Resolved by tsm's own config loader from the `--set` items the
    finetune rule passes, so the workflow and the trainer read the same model_id and random_init."""
    if config["mode"] != "finetune":
        return None
    from tsm.config import load_config, parse_settings

    items = [item.format(data=training_data()) for item in TRAINING_SETTINGS] + stage_settings("finetune")
    training = load_config(config["finetune"]["config"], settings=parse_settings(items))
    if training.random_init or not training.model_id:
        return None
    return training.model_id


START_MODEL = start_model()
# Scored on the benchmark (benchmark/{name}.csv): the trained stages, the start of a fine-tune, the baseline.
EVALUATED = [*STAGES, *(["start"] if START_MODEL else []), "seasonal-naive"]


def start_model_input(wildcards=None):
    """The fine-tune's local start folder as an input (a stage of this DAG, say); nothing for a hub id."""
    return [START_MODEL] if START_MODEL and is_local_model(START_MODEL) else []


def evaluated_model_input(wildcards):
    if wildcards.model == "seasonal-naive":
        return []
    if wildcards.model == "start":
        return start_model_input()
    return [final_model(wildcards.model)]


def evaluated_model(wildcards):
    """What `tsm evaluate --model` gets for a benchmark/{model}.csv."""
    if wildcards.model == "start":
        return START_MODEL
    return "seasonal-naive" if wildcards.model == "seasonal-naive" else final_model(wildcards.model)


def final_model(stage):
    return f"{RESULTS}/{stage}/final-checkpoint"


def launch_command(wildcards):
    """Start the trainer's ranks. local: `accelerate launch` on this machine (on CPU, --multi_gpu plus
    ACCELERATE_USE_CPU gives real gloo ranks; `--cpu --num_processes N` would start one). slurm: one
    `tsm launch` per node through srun, which works out machine rank and main address from the job."""
    launch = config["launch"]
    if launch["mode"] == "slurm":
        nodes = int(os.environ.get("TSM_SLURM_NODES", launch["nodes"]))
        # The inner srun does not inherit --cpus-per-task (a known plugin issue): pass it, or each node's
        # launcher runs on one core and starves the data workers. use_cpu: gloo ranks on CPU nodes (--cpu).
        return (
            f"srun --ntasks-per-node=1 --cpus-per-task={training_threads()} tsm launch --nodes {nodes} "
            f"{'--cpu ' if launch['use_cpu'] else ''}--gpus-per-node {launch['processes_per_node']} "
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
        # No quotes around it: the plugin appends it to the sbatch command line as it is, and a quoted
        # '--ntasks-per-node=1 --exclusive ...' would reach sbatch as one word (an invalid --ntasks-per-node).
        "slurm_extra": "--ntasks-per-node=1 --exclusive --signal=TERM@300",
    }


def training_params(stage):
    """The params of every training rule (the launcher, the stage's training config, its run folder, that is
    the output's parent where checkpoints go beside final-checkpoint, and the workflow config's overrides)."""
    return {
        "launch": launch_command,
        "config": config[stage]["config"],
        "outdir": lambda wildcards, output: os.path.dirname(output[0]),
        "overrides": overrides(stage),
    }


def training_shell(flags=""):
    """The shell command of a training rule: the trainer on the rule's config, corpus (input `data`) and
    overrides, writing into its run folder; `flags`: the stage's own `tsm train` flags, after --config."""
    settings = " ".join(f"--set {shlex.quote(item.format(data='{input.data}'))}" for item in TRAINING_SETTINGS)
    return (
        f"{{params.launch}} --config {{params.config}} {flags + ' ' if flags else ''}{settings}"
        " --output-dir {params.outdir} {params.overrides} > {log} 2>&1"
    )


def training_threads():
    launch = config["launch"]
    return launch["processes_per_node"] * launch["cpu_threads_per_process"] + (4 if launch["mode"] == "slurm" else 0)
