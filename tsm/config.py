"""One training config object: YAML file + CLI overrides, validated before any heavy work starts.

Every key is checked (pydantic, unknown keys forbidden); a bad file raises `ConfigError` naming the
file, the key and what is allowed.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class TsmError(Exception):
    """An error in user input (config, data, paths): the CLI prints it without a traceback."""


class ConfigError(TsmError):
    pass


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# The 21 quantile levels of the released Chronos-2 models.
DEFAULT_QUANTILES = [0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                     0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99]


class ModelArchConfig(_Strict):
    """Architecture of a randomly initialised Chronos-2 model (ignored when loading a checkpoint)."""

    d_model: int = Field(512, gt=0)
    d_kv: int = Field(64, gt=0)
    d_ff: int = Field(2048, gt=0)
    num_layers: int = Field(6, gt=0)
    num_heads: int = Field(8, gt=0)
    dropout_rate: float = Field(0.1, ge=0.0, lt=1.0)
    rope_theta: float = Field(10000.0, gt=0)
    input_patch_size: int = Field(16, gt=0)
    output_patch_size: int = Field(16, gt=0)
    quantiles: list[float] = Field(default_factory=lambda: list(DEFAULT_QUANTILES), min_length=1)
    use_reg_token: bool = True
    use_arcsinh: bool = True
    max_output_patches: int = Field(64, gt=0)
    # Scale of the time encoding. None = the context length. Set it to the final (stage-2) context
    # length from stage 1 on, so extending the context does not change the encoding of known positions.
    time_encoding_scale: int | None = Field(None, gt=0)
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"

    @model_validator(mode="after")
    def _check(self) -> ModelArchConfig:
        if self.input_patch_size != self.output_patch_size:
            raise ValueError("input_patch_size and output_patch_size must be equal (Chronos-2 requires it)")
        if any(not 0.0 < q < 1.0 for q in self.quantiles) or self.quantiles != sorted(set(self.quantiles)):
            raise ValueError("quantiles must be strictly increasing values in (0, 1)")
        return self


class MonitorConfig(_Strict):
    """What the run reports besides the per-step line (see tsm/train/monitor.py)."""

    health_report_interval: int = Field(500, gt=0)  # steps between boxed health reports
    grad_explosion_factor: float = Field(10.0, gt=1.0)  # alert when grad norm > factor x its recent median
    throughput_drop_share: float = Field(0.5, gt=0.0, lt=1.0)  # alert when steps/s falls below this share
    data_wait_alert_share: float = Field(0.2, gt=0.0, lt=1.0)  # alert when data wait exceeds this share of a step
    loss_ema_fast_steps: int = Field(50, gt=0)  # span of the fast loss EMA (the log line's `ema=`)
    loss_ema_slow_steps: int = Field(500, gt=0)  # span of the slow loss EMA (the health report's trend)
    alert_cooldown_steps: int = Field(500, gt=0)  # the same kind of alert is printed at most once per this many steps
    # Where every scalar goes (tsm/train/trackers.py): TensorBoard and/or the experiment trackers, rank 0 only.
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=lambda: ["tensorboard"])
    tracker_run_name: str | None = None  # null: the run folder's last two parts (e.g. test/stage1)
    mlflow_tracking_uri: str | None = None  # null: MLFLOW_TRACKING_URI, else MLflow's own default
    mlflow_experiment: str = "tsm"
    wandb_project: str | None = None  # null: WANDB_PROJECT, else "tsm"
    wandb_entity: str | None = None  # null: WANDB_ENTITY, else the account's default
    # How long the end of training waits for a tracker to take what is left (the final model's upload included)
    # before it gives up, says what was not sent, and ends anyway.
    tracker_timeout_s: float = Field(600.0, gt=0)
    # [start, stop]: a torch.profiler trace of these optimizer steps (tsm/train/profiling.py); null: off.
    profile_steps: list[int] | None = Field(None, min_length=2, max_length=2)

    @field_validator("report_to")
    @classmethod
    def _unique_trackers(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"report_to names a tracker twice: {value}")
        return value

    @field_validator("profile_steps")
    @classmethod
    def _profile_window(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not 1 <= value[0] <= value[1]:
            raise ValueError(f"profile_steps must be [start, stop] with 1 <= start <= stop, got {value}")
        return value


class ParallelismConfig(_Strict):
    """How the model is spread over ranks (tsm/train/parallel.py)."""

    strategy: Literal["ddp", "fsdp"] = "ddp"  # fsdp: torch FSDP2, each encoder block a shard unit
    reshard_after_forward: bool = True  # false: keep gathered params between forward and backward (faster, more memory)
    gradient_checkpointing: bool = False  # non-reentrant activation checkpointing around each encoder block
    # Compile each encoder block (inductor: fused norms, RoPE and dropout). auto: on a GPU, not on a CPU, where
    # the first steps would wait ~30 s for the C++ build of a model that trains in minutes.
    torch_compile: bool | Literal["auto"] = "auto"


# What Chronos2Pipeline.fit adapts by default: the attention projections and the output layer.
DEFAULT_LORA_TARGETS = ["self_attention.q", "self_attention.k", "self_attention.v", "self_attention.o",
                        "output_patch_embedding.output_layer"]


class LoraSettings(_Strict):
    """LoRA adapters (peft) for finetune_mode: lora."""

    r: int = Field(8, gt=0)  # adapter rank
    alpha: float = Field(16.0, gt=0)  # scaling: alpha / r
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS), min_length=1)


class BenchmarkWeights(_Strict):
    wql: float = Field(0.5, ge=0.0)
    mase: float = Field(0.5, ge=0.0)


class TrainConfig(_Strict):
    # --- model ---------------------------------------------------------------------------------
    model_id: str | None = None  # hub id (amazon/chronos-2) or local checkpoint folder
    random_init: bool = True
    model: ModelArchConfig = Field(default_factory=ModelArchConfig)
    context_length: int = Field(2048, gt=0)
    prediction_length: int = Field(64, gt=0)
    min_past: int = Field(60, gt=0)
    # Share of training windows whose context is cut to a length drawn log-uniformly in [min_past,
    # context_length]. Uniform window ends rarely give the 15-40-point histories of yearly series; 0: off.
    short_context_share: float = Field(0.0, ge=0.0, le=1.0)
    finetune_mode: Literal["full", "lora"] = "full"  # lora: train adapters only (needs a pretrained model_id)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    # --- data ----------------------------------------------------------------------------------
    training_data_paths: list[str] = Field(default_factory=list)
    # Windows of this many batches are drawn together and batched by context length (as Hugging Face's
    # group_by_length): the same windows, far fewer padding tokens (bench/bench_padding.py). 0: off.
    length_group_batches: int = Field(0, ge=0)
    probability: list[float] | None = None
    max_train_series: int | None = Field(None, gt=0)
    dataloader_num_workers: int = Field(0, ge=0)
    # --- validation (off unless eval_steps is set) ----------------------------------------------
    # Validation windows: the last prediction_length steps of each series of these corpora; null: those of
    # the training series, which are then held out of training.
    validation_data_paths: list[str] | None = None
    eval_steps: int | None = Field(None, gt=0)  # validate every this many steps (and before the first one)
    validation_metric: Literal["wql", "loss"] = "wql"  # what ranks checkpoints when validation is on
    per_device_eval_batch_size: int | None = Field(None, gt=0)  # null: 4 x per_device_train_batch_size
    max_validation_series: int = Field(1000, gt=0)  # a fixed random subset of larger sets (the log says so)
    early_stopping_patience: int | None = Field(None, gt=0)  # evaluations without improvement before stopping
    # Which weights final-checkpoint holds. best: the best evaluated checkpoint, the start included, so the
    # result is never worse than where it started; last: the last step's; auto: best when the run starts
    # from a checkpoint and evaluates (validation or benchmark), else last.
    export: Literal["auto", "best", "last"] = "auto"
    # --- optimisation --------------------------------------------------------------------------
    max_steps: int = Field(200, gt=0)
    per_device_train_batch_size: int = Field(32, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_scheduler_type: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"  # auto: bf16 on GPUs that support it
    tf32: bool = True
    parallelism: ParallelismConfig = Field(default_factory=ParallelismConfig)
    # --- output --------------------------------------------------------------------------------
    output_dir: str = "results/train"
    save_steps: int = Field(100, gt=0)
    save_total_limit: int | None = Field(3, gt=0)
    log_steps: int = Field(10, gt=0)
    monitoring: MonitorConfig = Field(default_factory=MonitorConfig)
    # --- benchmark evaluation during training (off unless benchmark_config is set) --------------
    benchmark_config: str | None = None  # e.g. config/benchmarks/lite-offline.yaml
    benchmark_datasets_root: str = "data/benchmarks"
    benchmark_eval_steps: int = Field(5000, gt=0)  # lite-offline costs ~150-250 test-config steps: <5% here
    benchmark_batch_size: int = Field(256, gt=0)
    benchmark_top_k: int = Field(3, gt=0)  # checkpoints kept by score, never rotated away
    benchmark_checkpoint_metric: Literal["wql", "mase", "composite"] = "wql"
    benchmark_composite_weights: BenchmarkWeights = Field(default_factory=BenchmarkWeights)
    # auto: continue this run from the newest valid checkpoint in output_dir, if any (a rerun after a crash
    # or preemption resumes by itself); a checkpoint folder: continue from it; null: start afresh.
    resume_from_checkpoint: str | None = "auto"
    max_consecutive_bad_steps: int = Field(10, gt=0)  # non-finite steps in a row before the run stops

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML 1.1 reads `mixed_precision: no` as false

    @model_validator(mode="before")
    @classmethod
    def _monitoring_shorthand(cls, data: Any) -> Any:
        """A monitoring key at the top level (`health_report_interval: 20`) is shorthand for the same key
        under `monitoring:`; the resolved config always writes the nested form."""
        if not isinstance(data, dict) or not any(key in MonitorConfig.model_fields for key in data):
            return data
        data = dict(data)
        monitoring = dict(data.get("monitoring") or {})
        for key in [k for k in data if k in MonitorConfig.model_fields]:
            monitoring[key] = data.pop(key)
        data["monitoring"] = monitoring
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if not self.random_init and not self.model_id:
            raise ValueError("random_init is false, so model_id (a hub id or a checkpoint folder) is required")
        evaluates = self.eval_steps is not None or self.benchmark_config is not None
        if self.finetune_mode == "lora" and self.random_init:
            raise ValueError("finetune_mode lora adapts a pretrained model: set random_init false and model_id")
        if self.validation_data_paths is not None and self.eval_steps is None:
            raise ValueError("validation_data_paths is set but eval_steps is not: set eval_steps (e.g. 100)")
        if self.early_stopping_patience is not None and not evaluates:
            raise ValueError("early_stopping_patience needs an evaluation: set eval_steps or benchmark_config")
        if self.export == "best" and not evaluates:
            raise ValueError("export: best needs an evaluation to rank checkpoints: set eval_steps or "
                             "benchmark_config")
        scale = self.model.time_encoding_scale
        if self.random_init and scale is not None and self.context_length > scale:
            raise ValueError(
                f"context_length {self.context_length} exceeds model.time_encoding_scale {scale}: positions past "
                "the scale get time encodings the model never saw. Set model.time_encoding_scale to the longest "
                "context the model will train at (the stage-2 context), or lower context_length")
        if self.probability is not None:
            if len(self.probability) != len(self.training_data_paths):
                raise ValueError(
                    f"probability has {len(self.probability)} entries but training_data_paths has "
                    f"{len(self.training_data_paths)}: give one probability per path"
                )
            if any(p < 0 for p in self.probability) or abs(sum(self.probability) - 1.0) > 1e-6:
                raise ValueError(f"probability must be non-negative and sum to 1, got {self.probability}")
        return self

    @property
    def validates(self) -> bool:
        return self.eval_steps is not None

    @property
    def exports_best(self) -> bool:
        evaluates = self.validates or self.benchmark_config is not None
        return self.export == "best" or (self.export == "auto" and not self.random_init and evaluates)

    @property
    def mixture_weights(self) -> list[float]:
        n = len(self.training_data_paths)
        return list(self.probability) if self.probability is not None else [1.0 / n] * n

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid training config {source}:"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(TrainConfig, loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"  - unknown key '{key}'.{hint} Allowed keys: {', '.join(allowed)}")
        else:
            got = e.get("input")
            got_text = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"  - {key}: {e['msg']}{got_text}")
    return "\n".join(lines)


def parse_settings(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` items as a dict, each value in YAML syntax (`--set probability=null` sets None)."""
    settings: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set log_steps=5")
        key, value = item.split("=", 1)
        try:
            settings[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({exc.problem})") from None
    return settings


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML training config and apply overrides (dotted keys allowed: `model.d_model`): `overrides`
    from command-line flags (None: the flag was not given), then `settings` from `--set` (None sets null)."""
    data: dict[str, Any] = {}
    source = "(defaults)"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"training config {path} does not exist (expected a YAML file)")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"training config {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"training config {path} must be a mapping of keys to values, got {type(loaded).__name__}"
            )
        data = loaded
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    for key, value in {**given, **(settings or {})}.items():
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    if given or settings:
        source += " with command-line overrides"
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


# CLI flag -> config key, for `tsm train` (and `tsm launch`, which resolves the same config to find the run's
# folder). Flags override the YAML file; unset flags leave it alone.
TRAIN_FLAGS: dict[str, tuple[type, str]] = {
    "model_id": (str, "hub id or local checkpoint folder to start from"),
    "context_length": (int, "context length to train at (updates the model's config)"),
    "prediction_length": (int, "prediction length to train at"),
    "max_steps": (int, "number of optimizer steps"),
    "learning_rate": (float, "peak learning rate"),
    "per_device_train_batch_size": (int, "series per device per micro-batch"),
    "gradient_accumulation_steps": (int, "micro-batches per optimizer step"),
    "output_dir": (str, "where checkpoints, logs and TensorBoard files go"),
    "resume_from_checkpoint": (str, "a checkpoint-<step> folder to continue from"),
    "max_train_series": (int, "use at most this many series per corpus (deterministic subset)"),
    "seed": (int, "random seed"),
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `tsm train`: --config, a flag per TRAIN_FLAGS key, --random-init, --set KEY=VALUE."""
    parser.add_argument("--config", help="training config YAML (config/training/*.yaml)")
    for key, (kind, help_text) in TRAIN_FLAGS.items():
        parser.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, help=help_text)
    parser.add_argument("--random-init", dest="random_init", action=argparse.BooleanOptionalAction, default=None,
                        help="start from random weights (--no-random-init: load --model-id)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set model.d_model=128 (YAML value syntax)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    flags = {key: getattr(args, key) for key in [*TRAIN_FLAGS, "random_init"]}
    return load_config(args.config, flags, parse_settings(args.extra))


def config_from_argv(argv: Sequence[str]) -> TrainConfig:
    """The config `tsm train ARGV` trains with."""
    parser = argparse.ArgumentParser(prog="tsm train", add_help=False)
    add_train_arguments(parser)
    args, _ = parser.parse_known_args(list(argv))
    return config_from_args(args)
