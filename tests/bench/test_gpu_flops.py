"""bench/gpu_check.py's FLOP count (issue 26, reading 7): from the model's architecture, equal to torch's own
FLOP counter on a training step, for the 12-layer base model that stage 2 trains.

The models here use eager attention: torch's counter has no formula for the CPU SDPA kernel (it counted every
matmul of a step but the attention, measured), while eager attention's matmuls it counts as any other; on a GPU
it counts the SDPA kernels by the same 4 x (forward) + 8 x (backward) heads x d_kv x q x k."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.bench.gpu_check_module import gpu_check
from tsm.model import build_model


def training_step_flops(model: torch.nn.Module, batch: dict) -> int:
    with FlopCounterMode(display=False) as counted:
        model(**batch).loss.backward()
    return counted.get_total_flops()


def left_padded_batch(rows: int, width: int, groups: list[int]) -> dict:
    torch.manual_seed(0)
    context = torch.randn(rows, width).cumsum(-1)
    context[0, : width // 3] = float("nan")  # one row left-padded: its useful tokens are fewer
    return {"context": context, "future_target": torch.randn(rows, 64), "num_output_patches": 4,
            "group_ids": torch.tensor(groups)}


def test_stage_2_flops_come_from_the_12_layer_model_not_the_stage_2_config():
    check = gpu_check()
    stage2 = check.base_config(2, False, {})
    assert (stage2.model.num_layers, stage2.model.num_heads) != (12, 12)  # the reading: no model block in its YAML
    stage1 = check.base_config(1, False, {})
    base = stage1.model.model_copy(update={"dropout_rate": 0.0, "attn_implementation": "eager"})
    model = build_model(base, 256)  # the base architecture
    assert (model.config.num_layers, model.config.num_heads) == (12, 12)
    batch = left_padded_batch(2, 256, [0, 1])
    flops = check.StepFlops(model)
    assert flops.step(batch, useful=False) == training_step_flops(model, batch)
    assert flops.step(batch, useful=True) < flops.step(batch, useful=False)


@pytest.mark.parametrize("rows, width, groups", [(1, 512, [0]), (3, 200, [0, 1, 2]), (3, 512, [0, 0, 1])])
def test_the_flop_count_is_torchs_on_the_test_model(rows, width, groups):
    check = gpu_check()
    cfg = check.base_config(1, True, {})
    model = build_model(cfg.model.model_copy(update={"attn_implementation": "eager"}), cfg.context_length)
    batch = left_padded_batch(rows, width, groups)
    flops = check.StepFlops(model)
    assert flops.step(batch, useful=False) == training_step_flops(model, batch)
    # Useful tokens: each row's own patches, group attention within its own group only.
    useful = flops.step(batch, useful=True)
    assert useful < flops.step(batch, useful=False) or rows == 1 and groups == [0] and width % 16 == 0
