"""tsm.train.parallel in one process: activation checkpointing recomputes exact gradients for every parameter, and
the one-process paths of parallelize and the helpers around it. DDP and FSDP2 over real ranks are end-to-end
(tests/train/test_distributed.py, pytest -m e2e)."""

from __future__ import annotations

import logging

import pytest
import torch
from accelerate import Accelerator

from tsm.config import ModelArchConfig, ParallelismConfig
from tsm.model import build_model
from tsm.train.parallel import (
    apply_activation_checkpointing,
    clip_grad_norm,
    compiles,
    encoder_blocks,
    is_sharded,
    parallelize,
)

ARCH = ModelArchConfig(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
                       max_output_patches=2)


def fixed_batch() -> dict:
    g = torch.Generator().manual_seed(7)
    return {"context": torch.randn(4, 128, generator=g).cumsum(-1) + 50,
            "future_target": torch.randn(4, 32, generator=g).cumsum(-1) + 50, "num_output_patches": 2}


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model(**fixed_batch()).loss.backward()
    # the checkpoint wrapper adds a level to the parameter names: compare by the unwrapped name
    return {name.replace("._checkpoint_wrapped_module", ""): p.grad for name, p in model.named_parameters()}


def test_activation_checkpointing_gives_every_parameter_its_exact_gradient():
    torch.manual_seed(0)
    plain = build_model(ARCH, 128).train()
    recomputed = build_model(ARCH, 128).train()
    recomputed.load_state_dict(plain.state_dict())
    apply_activation_checkpointing(recomputed)
    assert len(encoder_blocks(recomputed)) == ARCH.num_layers  # still found inside their wrappers
    expected, got = gradients(plain), gradients(recomputed)
    assert got.keys() == expected.keys()
    missing = [name for name, g in got.items() if g is None and expected[name] is not None]
    assert not missing  # the reentrant variant leaves such parameters without gradients
    for name, g in expected.items():
        if g is not None:
            torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_one_process_trains_unsharded_whatever_the_strategy(caplog):
    accelerator = Accelerator(cpu=True)
    model = build_model(ARCH, 128).train()
    with caplog.at_level(logging.INFO, logger="tsm"):
        wrapped = parallelize(model, ParallelismConfig(strategy="fsdp", torch_compile=False), accelerator)
    assert "FSDP requested with one process: training unsharded" in caplog.text
    assert not is_sharded(wrapped) and "torch.compile" not in caplog.text
    grads = [g for g in gradients(wrapped).values() if g is not None]
    expected = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    norm = clip_grad_norm(wrapped, 1e6)
    assert type(norm) is torch.Tensor and norm.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("setting, device, expected", [("auto", "cpu", False), ("auto", "cuda", True),
                                                        (True, "cpu", True), (False, "cuda", False)])
def test_compile_follows_the_setting_and_auto_compiles_on_gpus_only(setting, device, expected):
    assert compiles(ParallelismConfig(torch_compile=setting), torch.device(device)) is expected
