"""Run by tests/train/test_distributed.py under `accelerate launch` with 2 CPU ranks (or alone, as the
single-process reference): 3 AdamW steps on a fixed batch, with dropout 0, for each parallel setup.
Each rank trains on its half of the batch; results (losses, first-step grads, final params, shard sizes)
are written for the test to compare. The `*_accum` setups run one step of the loop's own train_step with
gradient accumulation: each rank's half in 2 micro-batches (alone: the whole batch at once)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.distributed.tensor import DTensor

from tsm.config import ModelArchConfig, ParallelismConfig, TrainConfig
from tsm.model import build_model
from tsm.train.checkpoint import full_model_state, write_model_folder
from tsm.train.loop import build_optimizer, build_scheduler, train_step
from tsm.train.parallel import clip_grad_norm, parallelize
from tsm.train.reliability import BadStepGuard

ARCH = ModelArchConfig(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
                       max_output_patches=2)
SETUPS = {"ddp": ("ddp", False), "fsdp": ("fsdp", False), "fsdp_ac": ("fsdp", True),
          "ddp_accum": ("ddp", False), "fsdp_accum": ("fsdp", False)}


def fixed_batch() -> dict:
    g = torch.Generator().manual_seed(123)
    context = torch.randn(8, 128, generator=g).cumsum(-1) + 50
    return {"context": context, "future_target": torch.randn(8, 32, generator=g).cumsum(-1) + 50,
            "num_output_patches": 2}


def full(t: torch.Tensor) -> torch.Tensor:
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone().cpu()


def run(setup: str, accelerator: Accelerator, out: Path) -> None:
    strategy, checkpointing = SETUPS[setup]
    torch.manual_seed(0)
    model = build_model(ARCH, 128).to(accelerator.device).train()
    model = parallelize(model, ParallelismConfig(strategy=strategy, gradient_checkpointing=checkpointing),
                        accelerator)
    cfg = TrainConfig(learning_rate=1e-3, weight_decay=0.01, output_dir=str(out))
    optimizer = build_optimizer(model, cfg)
    batch = fixed_batch()
    rows = 8 // accelerator.num_processes
    mine = {k: v[accelerator.process_index * rows:(accelerator.process_index + 1) * rows]
            if torch.is_tensor(v) else v for k, v in batch.items()}
    losses, grads = [], {}
    for step in range(3):
        loss = model(**mine).loss
        loss.backward()
        clip_grad_norm(model, 1e6)
        if step == 0:
            grads = {n: full(p.grad) for n, p in accelerator.unwrap_model(model).named_parameters()}
        losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    params = full_model_state(accelerator.unwrap_model(model))
    sharded = [p for p in model.parameters() if isinstance(p, DTensor)]
    local = sum(p.to_local().numel() for p in sharded) if sharded else sum(p.numel() for p in model.parameters())
    folder = out / setup
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    write_model_folder(accelerator, model, folder / "hf", cfg, len(losses))
    if accelerator.is_main_process:
        torch.save({"params": params, "grads": grads}, folder / "state.pt")
        (folder / "meta.json").write_text(json.dumps({
            "world_size": accelerator.num_processes, "losses": losses, "local_numel_rank0": local,
            "full_numel": sum(v.numel() for v in params.values()), "sharded": bool(sharded)}))
    accelerator.wait_for_everyone()


def accumulate(setup: str, accelerator: Accelerator, out: Path) -> None:
    """One train_step; its loss (mean over ranks), gradient norm and gradients (AdamW's first moment after
    the step is (1 - beta1) x the gradient; clipping is off) are written for the test to compare."""
    strategy, _ = SETUPS[setup]
    torch.manual_seed(0)
    model = build_model(ARCH, 128).to(accelerator.device).train()
    model = parallelize(model, ParallelismConfig(strategy=strategy), accelerator)
    ranks = accelerator.num_processes
    accum = 1 if ranks == 1 else 2
    cfg = TrainConfig(learning_rate=1e-3, weight_decay=0.01, output_dir=str(out), gradient_accumulation_steps=accum,
                      max_grad_norm=1e6)
    optimizer = build_optimizer(model, cfg)
    rows = 8 // ranks // accum
    first = accelerator.process_index * rows * accum
    micro = [{k: v[first + j * rows:first + (j + 1) * rows] if torch.is_tensor(v) else v
              for k, v in fixed_batch().items()} for j in range(accum)]
    result = train_step(model, iter(micro), optimizer, build_scheduler(optimizer, cfg), accelerator, cfg,
                        BadStepGuard(10, 10), step=1)
    loss = accelerator.reduce(result.loss.detach(), reduction="mean").item()
    grads = {n: full(optimizer.state[p]["exp_avg"]) / (1 - cfg.adam_beta1)
             for n, p in accelerator.unwrap_model(model).named_parameters()}
    sharded = any(isinstance(p, DTensor) for p in model.parameters())
    folder = out / setup
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"grads": grads}, folder / "state.pt")
        (folder / "meta.json").write_text(json.dumps({
            "world_size": ranks, "accumulation": accum, "loss": loss, "grad_norm": float(result.grad_norm),
            "samples": result.samples, "sharded": sharded}))
    accelerator.wait_for_everyone()


def main() -> None:
    out = Path(sys.argv[1])
    setups = sys.argv[2].split(",")
    accelerator = Accelerator()
    for setup in setups:
        (accumulate if setup.endswith("_accum") else run)(setup, accelerator, out)
    accelerator.end_training()


if __name__ == "__main__":
    main()
