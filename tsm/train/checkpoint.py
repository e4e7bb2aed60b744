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
import random
import re
import shutil
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

from tsm.config import ConfigError, TrainConfig
from tsm.train.lora import is_lora, merge, rebuild_on_cpu, save_adapters
from tsm.train.provenance import write_provenance

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
FINAL_CHECKPOINT = "final-checkpoint"
TRAINER_STATE = "trainer_state.pt"
SHARDED_STATE = "dcp"
CONFIG_COPY = "tsm_config.yaml"


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
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


def remove_dir(path: Path) -> None:
    """Delete a folder without ever showing it half deleted: it is renamed to a temporary name first (a crash
    mid-delete leaves only a `.tmp-` folder, which the next start clears)."""
    doomed = path.with_name(f".tmp-removing-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a completed temporary folder into place, replacing an older folder of the same name."""
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def save_checkpoint(
    accelerator: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: TrainConfig,
    step: int,
    extra_state: dict[str, Any],
) -> Path:
    """Write `checkpoint-{step}` atomically (all ranks call this), then rotate old checkpoints."""
    output_dir = Path(cfg.output_dir)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".tmp-checkpoint-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write_model_folder(accelerator, model, tmp, cfg, step)
    # Keys of the unwrapped model: a checkpoint resumes under DDP, FSDP or one process alike.
    model_state, optim_state = get_state_dict(accelerator.unwrap_model(model), optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp / SHARDED_STATE),
             no_dist=not torch.distributed.is_initialized())
    torch.save(rng_state(), tmp / f"rng_state_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        state = {"step": step, "scheduler": scheduler.state_dict(), "world_size": accelerator.num_processes,
                 **extra_state}
        torch.save(state, tmp / TRAINER_STATE)  # written last among the files
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _replace_dir(tmp, final)
        rotate_checkpoints(output_dir, cfg.save_total_limit)
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
    trainer_state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=False)
    scheduler.load_state_dict(trainer_state["scheduler"])
    rng_file = path / f"rng_state_{rank}.pt"
    trainer_state["rng"] = torch.load(rng_file, weights_only=False) if rng_file.is_file() else None
    return trainer_state


def save_final(accelerator: Any, model: torch.nn.Module, cfg: TrainConfig, step: int | None = None) -> Path:
    final = Path(cfg.output_dir) / FINAL_CHECKPOINT
    tmp = final.with_name(f".tmp-{FINAL_CHECKPOINT}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    write_model_folder(accelerator, model, tmp, cfg, cfg.max_steps if step is None else step)
    if accelerator.is_main_process:
        _replace_dir(tmp, final)
        logger.info("Saved %s", final)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    found = []
    if output_dir.is_dir():
        for p in output_dir.iterdir():
            m = CHECKPOINT_RE.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
    return sorted(found)


def rotate_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Keep the newest `keep` checkpoints, plus every checkpoint listed in best-checkpoints.json."""
    if keep is None:
        return
    from tsm.train.evaluation import read_best

    protected = {entry["path"] for entry in read_best(output_dir)}
    for _, path in list_checkpoints(output_dir)[:-keep]:
        if path.name not in protected:
            remove_dir(path)
            logger.info("Removed %s (save_total_limit=%d)", path, keep)


def missing_checkpoint_files(path: Path) -> list[str]:
    """What a complete checkpoint holds and `path` lacks (empty: complete). Checkpoints appear by rename, so
    a file is missing only from a folder that is not a checkpoint or was damaged after the fact."""
    required = ("config.json", "model.safetensors", TRAINER_STATE, SHARDED_STATE)
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
