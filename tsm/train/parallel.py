"""All parallelism in one place (in the spirit of torchtitan's `parallelize`): DDP or FSDP2, activation
checkpointing, torch.compile. The training loop's body is the same for one process, DDP and FSDP.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

import torch
from accelerate import Accelerator, PartialState
from chronos.chronos2.model import Chronos2EncoderBlock
from torch.distributed.tensor import DTensor

from tsm.config import ParallelismConfig

logger = logging.getLogger("tsm")


def apply_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each encoder block in the backward pass. Non-reentrant: exact gradients (the reentrant
    variant silently leaves 111 parameters without gradients, DESIGN.md)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    blocks = model.encoder.block
    for i, block in enumerate(blocks):
        blocks[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def encoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, Chronos2EncoderBlock)]


def apply_fsdp(model: torch.nn.Module, settings: ParallelismConfig, bf16: bool) -> None:
    """FSDP2: each encoder block is one shard unit, then the root (embeddings, head, norms)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    block_policy = root_policy = MixedPrecisionPolicy()  # fp32 (on CPU always)
    if bf16:
        # bf16 compute and communication of parameters; gradients reduced in fp32 for accuracy.
        block_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        # The root's inputs are the raw series: cast to bf16 before the model's instance normalisation, a
        # series at 1e4 +- 10 would lose its signal (bf16's spacing at 1e4 is 64). The model normalises in
        # fp32 and then casts to its parameters' dtype itself; the blocks' inputs are normalised already.
        root_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                           cast_forward_inputs=False)
    for block in encoder_blocks(model):
        fully_shard(block, mp_policy=block_policy, reshard_after_forward=settings.reshard_after_forward)
    fully_shard(model, mp_policy=root_policy, reshard_after_forward=settings.reshard_after_forward)


def parallelize(model: torch.nn.Module, settings: ParallelismConfig, accelerator: Accelerator) -> torch.nn.Module:
    """Wrap `model` (already on its device) for training as `settings` say; returns the model to train."""
    if settings.gradient_checkpointing:
        apply_activation_checkpointing(model)
    if settings.strategy == "fsdp" and accelerator.num_processes > 1:
        apply_fsdp(model, settings, bf16=accelerator.mixed_precision == "bf16")
        logger.info("FSDP2: %d encoder blocks + root sharded over %d ranks (reshard_after_forward=%s)",
                    len(encoder_blocks(model)), accelerator.num_processes, settings.reshard_after_forward)
    else:
        if settings.strategy == "fsdp":
            logger.info("FSDP requested with one process: training unsharded")
        # accelerate wraps DDP when there are several processes, and adds autocast for bf16.
        model = accelerator.prepare_model(model)
    if compiles(settings, accelerator.device):
        compile_blocks(encoder_blocks(model))
    return model


# Recompiles of one block's code before dynamo falls back to eager for new shapes: with dynamic shapes a run needs
# one graph per autocast/grad mode, a few more for sizes 0/1 that dynamo specialises; a cold compile costs 30-80 s.
RECOMPILE_LIMIT = 8


def compile_blocks(blocks: list[torch.nn.Module]) -> None:
    """Compile each encoder block with dynamic shapes: the context's patch count varies batch to batch and
    the rows per batch with the stage (group attention runs along them), and a static compile would rebuild on
    the first new length, then again when dynamo turns that dimension dynamic. Recompiles are logged (torch's
    `recompiles` log: the guard that failed) and capped."""
    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    torch._logging.set_logs(recompiles=True)
    for block in blocks:
        block.compile(dynamic=True)
    logger.info("torch.compile: %d encoder blocks (dynamic shapes, at most %d recompiles)", len(blocks),
                RECOMPILE_LIMIT)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled in this process so far (a recompile adds one)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def compiles(settings: ParallelismConfig, device: torch.device) -> bool:
    """Whether the encoder blocks are compiled: as configured, and with `auto` where a GPU trains."""
    return device.type == "cuda" if settings.torch_compile == "auto" else settings.torch_compile


def end_process_group() -> None:
    """Once train() has returned: destroy the process group after the run's model is gone. A DDP reducer freed
    after the group destroys the gloo group itself, joining its worker threads while holding the GIL they may
    wait for (rank 1 hung so at exit, seen with py-spy)."""
    gc.collect()  # the model's reference cycles, before the group
    PartialState().destroy_process_group()


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


@contextlib.contextmanager
def no_gradient_sync(model: torch.nn.Module, accelerator: Accelerator) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter on a micro-batch that is not the last of a step."""
    if is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(model):
            yield


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip gradients; returns the total norm as a plain tensor (FSDP2 returns a DTensor)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm
