"""Issue 26, reading 9: the attention kernels training may use, and fully masked rows. Group attention has a
fully masked row at every padded patch of a series alone in its group; cuDNN attention's backward gives NaN on
them (every step would be skipped), so training turns cuDNN attention off and keeps flash, memory-efficient and
math. The backward with such rows is checked here on the CPU kernels, and by bench/gpu_preflight.py on the GPU's."""

from __future__ import annotations

import torch

from tsm.config import ModelArchConfig
from tsm.model import build_model, choose_attention_backends


def test_training_leaves_cudnn_attention_out():
    flags = ("cudnn_sdp_enabled", "flash_sdp_enabled", "mem_efficient_sdp_enabled", "math_sdp_enabled")
    before = [getattr(torch.backends.cuda, flag)() for flag in flags]
    try:
        choose_attention_backends()
        assert [getattr(torch.backends.cuda, flag)() for flag in flags] == [False, True, True, True]
    finally:
        for flag, value in zip(("cudnn", "flash", "mem_efficient", "math"), before, strict=True):
            getattr(torch.backends.cuda, f"enable_{flag}_sdp")(value)


def test_fully_masked_group_attention_rows_give_finite_gradients():
    torch.manual_seed(0)
    model = build_model(ModelArchConfig(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0),
                        256)
    context = torch.randn(4, 256).cumsum(-1)
    context[:2, :200] = float("nan")  # two rows left-padded, each alone in its group: fully masked rows
    batch = {"context": context, "future_target": torch.randn(4, 64), "num_output_patches": 4,
             "group_ids": torch.arange(4)}
    for dtype in (torch.float32, torch.bfloat16):
        model.zero_grad()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype == torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), dtype
