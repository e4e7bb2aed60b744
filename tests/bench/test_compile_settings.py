"""Issue 26, reading 4: the encoder blocks compile with dynamic shapes (the patch count changes batch to batch,
the rows with the stage), recompiles capped and logged; one block is compiled here on CPU and run at two
sequence lengths and two batch sizes without a second graph."""

from __future__ import annotations

import pytest
import torch

from tsm.config import ModelArchConfig
from tsm.model import build_model
from tsm.train.parallel import RECOMPILE_LIMIT, compile_blocks, compiled_graphs, encoder_blocks


@pytest.mark.e2e
def test_a_compiled_block_takes_new_lengths_and_batch_sizes_without_recompiling():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(ModelArchConfig(d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4, dropout_rate=0.0),
                        1024)
    compile_blocks(encoder_blocks(model))
    assert torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT
    graphs = []
    for rows, width in [(4, 512), (4, 640), (6, 512), (3, 1024)]:
        batch = {"context": torch.randn(rows, width), "future_target": torch.randn(rows, 64),
                 "num_output_patches": 4, "group_ids": torch.arange(rows)}
        model(**batch).loss.backward()
        graphs.append(compiled_graphs())
    assert graphs[0] >= 1 and graphs[1:] == [graphs[0]] * 3  # dynamic from the first compile
    torch._dynamo.reset()
