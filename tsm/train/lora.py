"""LoRA fine-tuning through peft: adapters on a frozen Chronos-2, exported merged (no peft needed to load).

The model trains wrapped in a `PeftModel`. Checkpoints keep its full state (base weights and adapters) for
resume; the HF folder beside them holds the merged weights, and `lora-adapter/` the adapters alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from chronos.chronos2 import Chronos2Model
from peft import LoraConfig, PeftModel, get_peft_model

from tsm.config import ConfigError, LoraSettings

logger = logging.getLogger("tsm")

ADAPTER_FOLDER = "lora-adapter"


def lora_config(settings: LoraSettings) -> LoraConfig:
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules))


def apply_lora(model: Chronos2Model, settings: LoraSettings) -> PeftModel:
    """Freeze `model` and add trainable adapters on the target modules."""
    try:
        adapted = get_peft_model(model, lora_config(settings))
    except ValueError as exc:  # peft names no module when a target matches nothing
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear)})
        raise ConfigError(f"lora.target_modules {settings.target_modules}: {exc}. Linear layers of Chronos-2 "
                          f"end in: {', '.join(linear)}") from None
    trainable, total = adapted.get_nb_trainable_parameters()
    logger.info("LoRA (r=%d, alpha=%g) on %s: %s of %s parameters train (%.2f%%)", settings.r, settings.alpha,
                ", ".join(settings.target_modules), f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return adapted


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)


def rebuild_on_cpu(adapted: PeftModel, state: dict[str, torch.Tensor]) -> PeftModel:
    """A CPU copy of `adapted` holding `state` (its full state, gathered from the ranks): built anew, so the
    export works the same whatever the ranks hold (DDP replicas or FSDP shards)."""
    copy = get_peft_model(Chronos2Model(adapted.get_base_model().config), lora_config_of(adapted))
    copy.load_state_dict(state)
    return copy


def save_adapters(adapted: PeftModel, folder: Path, base_model: str | None) -> None:
    """The adapters alone (adapter_config.json + adapter_model.safetensors), loadable with
    `PeftModel.from_pretrained(start_model, folder / "lora-adapter")`."""
    lora_config_of(adapted).base_model_name_or_path = base_model
    adapted.save_pretrained(folder / ADAPTER_FOLDER)


def merge(adapted: PeftModel) -> Chronos2Model:
    """Fold the adapters into the weights (in place): a plain Chronos-2 model that loads without peft."""
    return adapted.merge_and_unload()


def lora_config_of(adapted: PeftModel) -> LoraConfig:
    return adapted.peft_config["default"]

