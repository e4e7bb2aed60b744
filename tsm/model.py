"""Build, load and save Chronos-2 models (the model itself is chronos-forecasting's `Chronos2Model`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from chronos.chronos2 import Chronos2CoreConfig, Chronos2Model

from tsm.config import ConfigError, ModelArchConfig, TrainConfig
from tsm.hub import is_local_model

logger = logging.getLogger(__name__)


def build_model(arch: ModelArchConfig, context_length: int) -> Chronos2Model:
    """A randomly initialised Chronos-2 model (uses the global torch RNG: seed first)."""
    chronos_config = {
        "context_length": context_length,
        "input_patch_size": arch.input_patch_size,
        "input_patch_stride": arch.input_patch_size,
        "output_patch_size": arch.output_patch_size,
        "quantiles": list(arch.quantiles),
        "use_reg_token": arch.use_reg_token,
        "use_arcsinh": arch.use_arcsinh,
        "max_output_patches": arch.max_output_patches,
        "time_encoding_scale": arch.time_encoding_scale or context_length,
    }
    config = Chronos2CoreConfig(
        d_model=arch.d_model,
        d_kv=arch.d_kv,
        d_ff=arch.d_ff,
        num_layers=arch.num_layers,
        num_heads=arch.num_heads,
        dropout_rate=arch.dropout_rate,
        rope_theta=arch.rope_theta,
        attn_implementation=arch.attn_implementation,
        chronos_config=chronos_config,
    )
    _mark_loadable(config)
    return Chronos2Model(config)


def _mark_loadable(config: Chronos2CoreConfig) -> None:
    # Without these, chronos' BaseChronosPipeline.from_pretrained cannot pick the pipeline class.
    config.chronos_pipeline_class = "Chronos2Pipeline"
    config.architectures = ["Chronos2Model"]


def load_model(model_id: str) -> Chronos2Model:
    """Load a Chronos-2 model from a local checkpoint folder or a Hugging Face hub id."""
    path = Path(model_id).expanduser()
    local = is_local_model(model_id)
    if local:
        if not path.is_dir():
            raise ConfigError(
                f"model_id {model_id}: no such checkpoint folder. Give a folder holding config.json and "
                "model.safetensors (e.g. results/test/stage1/final-checkpoint) or a hub id such as amazon/chronos-2."
            )
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model_id {model_id}: the folder has no config.json, so it is not a Hugging Face model folder. "
                "Point at a checkpoint folder such as <output_dir>/final-checkpoint or <output_dir>/checkpoint-<step>."
            )
    try:
        from transformers import AutoConfig

        source = str(path) if local else model_id
        config = AutoConfig.from_pretrained(source)
    except OSError as exc:
        raise ConfigError(
            f"model_id {model_id}: could not be loaded ({exc.__class__.__name__}: {str(exc).splitlines()[0]}). "
            "A hub id needs network access or a filled HF cache; offline, give a local checkpoint folder."
        ) from None
    if not hasattr(config, "chronos_config") or "Chronos2Model" not in (config.architectures or []):
        raise ConfigError(
            f"model_id {model_id}: not a Chronos-2 checkpoint (architectures={config.architectures}, "
            f"chronos_config {'present' if hasattr(config, 'chronos_config') else 'missing'}). "
            "tsm trains Chronos-2 models only: use amazon/chronos-2 or a folder written by tsm."
        )
    model = Chronos2Model.from_pretrained(source)
    _mark_loadable(model.config)
    return model


def set_forecast_lengths(model: Chronos2Model, context_length: int, prediction_length: int) -> None:
    """Make the model train (and later save) at `context_length`, with enough output patches. Lengths only
    grow: a shorter `context_length` keeps the model's own (its windows fit within it).

    The model keeps two copies of its forecasting config: the dataclass `model.chronos_config`, which
    forward() reads (it cuts the context to its length), and the dict `model.config.chronos_config`,
    which save_pretrained writes. Both must change, or the model silently trains or saves at the old
    length. The time-encoding scale is kept: it defines how known positions are encoded.
    """
    old_context = model.chronos_config.context_length
    if context_length < old_context:  # the model's context is a maximum: shorter windows fit it unchanged
        logger.info("Training windows of %d steps; the model keeps its context length %d (not shortened, so "
                    "nothing it could read before is cut off)", context_length, old_context)
        context_length = old_context
    scale = model.chronos_config.time_encoding_scale
    if context_length > scale:
        raise ConfigError(
            f"context_length {context_length} exceeds the model's time_encoding_scale {scale}: positions past the "
            "scale get time encodings the model never saw. Extend to at most that length, or pretrain stage 1 "
            f"with model.time_encoding_scale set to the final context (>= {context_length})")
    patches_needed = math.ceil(prediction_length / model.chronos_config.output_patch_size)
    old_patches = model.chronos_config.max_output_patches
    new_patches = max(old_patches, patches_needed)
    if old_context != context_length:
        logger.info(
            "Context length transition: model was %d, training and saving at %d (time_encoding_scale stays %s)",
            old_context, context_length, model.chronos_config.time_encoding_scale,
        )
    if new_patches != old_patches:
        logger.info("max_output_patches %d -> %d for prediction_length %d", old_patches, new_patches,
                    prediction_length)
    for target in (model.chronos_config.__dict__, model.config.chronos_config):
        target["context_length"] = context_length
        target["max_output_patches"] = new_patches
        target["time_encoding_scale"] = model.chronos_config.time_encoding_scale


def create_model(cfg: TrainConfig) -> Chronos2Model:
    """The model a training run starts from: random init or a checkpoint, at the configured lengths."""
    if cfg.random_init:
        model = build_model(cfg.model, cfg.context_length)
    else:
        assert cfg.model_id is not None
        model = load_model(cfg.model_id)
    set_forecast_lengths(model, cfg.context_length, cfg.prediction_length)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def choose_attention_backends() -> None:
    """The scaled-dot-product attention kernels training may use: flash, memory-efficient and math, never
    cuDNN. Group attention has fully masked rows at every padded patch (a row alone in its group, or whose group
    is all padding there), and cuDNN attention's backward gives NaN on them, which would skip every step; torch
    may pick cuDNN once dropout is 0. Process-wide flags, as TF32: compiled blocks read them when traced."""
    torch.backends.cuda.enable_cudnn_sdp(False)
    torch.backends.cuda.enable_flash_sdp(True)
    torch.backends.cuda.enable_mem_efficient_sdp(True)
    torch.backends.cuda.enable_math_sdp(True)
