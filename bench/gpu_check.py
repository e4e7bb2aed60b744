"""GPU check for the distributed issue: the base config (12L/768d, context 2048) on one GPU with FSDP2,
bf16, with and without activation checkpointing and torch.compile. Prints steps/s, samples/s, peak memory
and MFU (model FLOPs per step from the parameter count and tokens, over the GPU's bf16 dense peak).

  bash bench/gpu_check.sh                       # on a GPU machine (< 8 minutes on one H100/H200)
  python bench/gpu_check.py --device cpu --tiny # a CPU smoke run of the same code path
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from tsm.config import ParallelismConfig, load_config
from tsm.model import build_model
from tsm.train.loop import build_optimizer
from tsm.train.parallel import apply_activation_checkpointing, apply_fsdp, encoder_blocks

REPO = Path(__file__).resolve().parents[1]
BF16_PEAK = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}  # dense bf16 FLOP/s


def model_flops_per_step(model: torch.nn.Module, cfg, batch: int) -> float:
    """6 x parameters x tokens for the matmuls (forward + backward) plus time attention's QK and AV."""
    patch = cfg.model.input_patch_size
    tokens_per_series = cfg.context_length // patch + 1 + math.ceil(cfg.prediction_length / patch)
    params = sum(p.numel() for p in model.parameters())
    attention = 12 * cfg.model.num_layers * cfg.model.num_heads * cfg.model.d_kv * tokens_per_series**2
    return batch * (6 * params * tokens_per_series + attention)


def run(cfg, device: torch.device, batch: int, checkpointing: bool, compile_blocks: bool, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.context_length).to(device).train()
    flops = model_flops_per_step(model, cfg, batch)
    if checkpointing:
        apply_activation_checkpointing(model)
    apply_fsdp(model, ParallelismConfig(strategy="fsdp"), bf16=device.type == "cuda")
    if compile_blocks:
        for block in encoder_blocks(model):
            block.compile()
    optimizer = build_optimizer(model, cfg)
    g = torch.Generator().manual_seed(0)
    data = {"context": (torch.randn(batch, cfg.context_length, generator=g).cumsum(-1)).to(device),
            "future_target": torch.randn(batch, cfg.prediction_length, generator=g).cumsum(-1).to(device),
            "num_output_patches": math.ceil(cfg.prediction_length / cfg.model.output_patch_size)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        model(**data).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up (and compilation)
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"ac": checkpointing, "compile": compile_blocks, "steps_per_s": 1 / seconds,
            "samples_per_s": batch / seconds, "peak_mem_gb": peak_mem,
            "mfu": flops / seconds / peak if peak else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="test config instead of base (CPU smoke run)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    cfg = load_config(REPO / "config/training" / ("chronos2-test.yaml" if args.tiny else "chronos2-base.yaml"),
                      {"model.dropout_rate": 0.0})
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{'test' if args.tiny else 'base'} config: {cfg.model.num_layers}L/{cfg.model.d_model}d, context "
          f"{cfg.context_length}, batch {args.batch_size}, device {device_name}")
    print(f"{'act.ckpt':>8} {'compile':>8} {'steps/s':>9} {'samples/s':>10} {'peak GB':>8} {'MFU':>7}")
    for checkpointing in (False, True):
        for compile_blocks in (False, True):
            r = run(cfg, device, args.batch_size, checkpointing, compile_blocks, args.steps)
            print(f"{str(r['ac']):>8} {str(r['compile']):>8} {r['steps_per_s']:9.2f} {r['samples_per_s']:10.1f} "
                  f"{r['peak_mem_gb']:8.1f} {100 * r['mfu']:6.1f}%", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
