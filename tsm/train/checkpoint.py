"""Checkpoints: an ordinary Hugging Face model folder plus everything needed to resume.

`checkpoint-{step}/` holds config.json + model.safetensors (the full model, gathered once and written
by rank 0; loadable by chronos' pipelines), `dcp/` (model and optimizer state written shard by shard by
every rank with torch.distributed.checkpoint: no rank gathers the optimizer, and a checkpoint of N ranks
loads on M), `trainer_state.pt` (scheduler, step, data-sampling state), one `rng_state_{rank}.pt` per
rank, and the resolved `tsm_config.yaml`. A checkpoint is written under a hidden temporary name and
renamed when complete, so a crash mid-write never leaves a checkpoint that looks valid.
"""

from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from tsm.atomic import fresh_temporary_folder, replace_folder, temporary_path
from tsm.card import write_model_card
from tsm.config import ConfigError, TrainConfig
from tsm.layout import (
    CONFIG_COPY,
    FINAL_CHECKPOINT,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    SHARDED_STATE,
    TRAINER_STATE,
    checkpoint_name,
    rng_state_name,
)
from tsm.provenance import write_provenance
from tsm.train.lora import is_lora, merge, rebuild_on_cpu, save_adapters

logger = logging.getLogger(__name__)



def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain data only, so that it loads with torch.load(weights_only=True)
    (numpy's key array is stored as a tensor, rebuilt by set_rng_state)."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": str(numpy_state["bit_generator"]),
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict) and torch.is_tensor(numpy_state.get("key")):  # as rng_state() stores it
        numpy_state = {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    np.random.set_state(numpy_state)  # else numpy's own tuple, from checkpoints of earlier tsm versions
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded model weights on rank 0's CPU (empty on other ranks). All ranks must call it.
    Pass the unwrapped model (no DDP `module.` prefix); FSDP2 shards in place, so it needs no unwrapping."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def _save_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path, cfg: TrainConfig) -> None:
    if is_lora(model):  # the folder gets the merged weights, so it loads without peft; the adapters go beside
        adapted = rebuild_on_cpu(model, state)
        save_adapters(adapted, folder, cfg.model_id)
        merge(adapted).save_pretrained(folder, safe_serialization=True)
    else:
        model.save_pretrained(folder, state_dict=state, safe_serialization=True)


def write_model_folder(accelerator: Any, model: torch.nn.Module, folder: Path, cfg: TrainConfig, step: int) -> None:
    """An HF model folder that `Chronos2Pipeline.from_pretrained` loads, with the run's config beside it.
    All ranks call it (the weights are gathered); rank 0 writes."""
    model = accelerator.unwrap_model(model)
    state = full_model_state(model)
    if accelerator.is_main_process:
        _save_weights(model, state, folder, cfg)
        (folder / CONFIG_COPY).write_text(cfg.to_yaml())
        write_provenance(folder, cfg, step)  # what it was trained on (tsm evaluate: in-domain vs zero-shot)
        write_model_card(folder)  # README.md in the hub's convention, from config.json and the provenance


def save_checkpoint(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: TrainConfig,
    step: int,
    extra_state: dict[str, Any],
) -> Path:
    """Write `checkpoint-{step}` atomically (all ranks call this). Rotation is tsm.train.selection's."""
    final = Path(cfg.output_dir) / checkpoint_name(step)
    tmp = temporary_path(final)  # every rank writes into the same folder: no per-process name
    if accelerator.is_main_process:
        fresh_temporary_folder(final)
    accelerator.wait_for_everyone()
    write_model_folder(accelerator, model, tmp, cfg, step)
    # Keys of the unwrapped model: a checkpoint resumes under DDP, FSDP or one process alike.
    model_state, optim_state = get_state_dict(accelerator.unwrap_model(model), optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / SHARDED_STATE),
             no_dist=not torch.distributed.is_initialized())
    torch.save(rng_state(), tmp / rng_state_name(accelerator.process_index))
    if accelerator.is_main_process:
        state = {"step": step, "scheduler": scheduler.state_dict(), "world_size": accelerator.num_processes,
                 **extra_state}
        torch.save(state, tmp / TRAINER_STATE)  # written last among the files
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_folder(tmp, final)
        logger.info("Saved %s", final)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    rank: int) -> dict[str, Any]:
    """Restore model, optimizer (resharded to this run's ranks) and scheduler; returns the trainer state.
    `model` is the unwrapped model (see save_checkpoint)."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path / SHARDED_STATE), no_dist=not torch.distributed.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])

    def load_safely(file: Path, legacy_globals: tuple = ()) -> Any:
        # weights_only=True: tensors and plain data only, so a crafted file cannot run code when it is read.
        # `legacy_globals` are allowed only for a second try, scoped to that one load.
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            try:
                if legacy_globals:
                    with torch.serialization.safe_globals(list(legacy_globals)):
                        return torch.load(file, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                pass
        try:  # names what the file refers to, without running it
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(file)
        except Exception:  # only for the message (e.g. a file not in torch's zip format)
            unsafe = []
        raise ConfigError(
            f"{file}: not a safe tsm checkpoint state: it refers to {', '.join(unsafe) or 'objects'} beyond tensors "
            "and plain data, which loading would have to run. Refused: resume only from checkpoints written by tsm."
        )

    trainer_state = load_safely(path / TRAINER_STATE)
    scheduler.load_state_dict(trainer_state["scheduler"])
    rng_file = path / rng_state_name(rank)
    # RNG files written before tsm stored numpy's state as plain data hold a numpy uint32 array.
    numpy_array = (np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32)))
    trainer_state["rng"] = load_safely(rng_file, numpy_array) if rng_file.is_file() else None
    return trainer_state


def save_final(accelerator: Any, model: torch.nn.Module, cfg: TrainConfig, step: int | None = None) -> Path:
    final = Path(cfg.output_dir) / FINAL_CHECKPOINT
    tmp = temporary_path(final)
    if accelerator.is_main_process:
        fresh_temporary_folder(final)
    write_model_folder(accelerator, model, tmp, cfg, cfg.max_steps if step is None else step)
    if accelerator.is_main_process:
        replace_folder(tmp, final)
        logger.info("Saved %s", final)
    accelerator.wait_for_everyone()
    return final


def missing_checkpoint_files(path: Path) -> list[str]:
    """What a complete checkpoint holds and `path` lacks (empty: complete). Checkpoints appear by rename, so
    a file is missing only from a folder that is not a checkpoint or was damaged after the fact."""
    required = (MODEL_CONFIG, MODEL_WEIGHTS, TRAINER_STATE, SHARDED_STATE)
    return [name for name in required if not (path / name).exists()]


def check_resumable(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(
            f"resume_from_checkpoint {path}: no such folder. Give a checkpoint-<step> folder from an earlier "
            "run's output_dir."
        )
    missing = missing_checkpoint_files(p)
    if missing:
        hint = " (final-checkpoint holds weights only: fine-tune from it with --model-id instead)" \
            if p.name == FINAL_CHECKPOINT else ""
        raise ConfigError(
            f"resume_from_checkpoint {path}: not a resumable tsm checkpoint, missing {', '.join(missing)}{hint}."
        )
    return p


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    """Put the weights of checkpoint `path` into `model` (unwrapped; all ranks call it), optimizer aside:
    how a run that exports its best checkpoint gets back to it."""
    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=str(path / SHARDED_STATE), no_dist=not torch.distributed.is_initialized())
    set_model_state_dict(model, state["model"])
