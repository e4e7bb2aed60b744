"""The training loop, read at once (in the spirit of nanoGPT and torchtitan): `train()` is the recipe,
`train_step()` the step body; what it builds comes from the functions beside it, and checkpoint ranking,
scoring and the export decision live in tsm.train.selection and tsm.train.evaluation."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import get_scheduler

from tsm.atomic import recover, write_text
from tsm.config import ConfigError, TrainConfig
from tsm.data.arrow import ArrowCorpus
from tsm.data.batches import TOKEN_COUNTS, TrainingBatches, batch_iterator
from tsm.layout import RESOLVED_CONFIG, checkpoint_name
from tsm.model import choose_attention_backends, count_parameters, create_model, load_model, set_forecast_lengths
from tsm.records import PREEMPTED_EXIT_CODE
from tsm.train.checkpoint import (
    check_resumable,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
    save_final,
    set_rng_state,
)
from tsm.train.evaluation import Scorer
from tsm.train.lora import apply_lora
from tsm.train.monitor import TrainingMonitor, training_logging
from tsm.train.parallel import clip_grad_norm, no_gradient_sync, parallelize
from tsm.train.reliability import (
    BadStepGuard,
    Preempted,
    PreemptionHandler,
    check_disk_space,
    check_same_architecture,
    find_resume_checkpoint,
)
from tsm.train.selection import ModelSelection
from tsm.train.summary import RunSummary

logger = logging.getLogger("tsm")

_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def train(cfg: TrainConfig) -> Path:
    """Train as configured; returns the `final-checkpoint` folder."""
    accelerator = start_accelerator(cfg)
    with training_logging(Path(cfg.output_dir), accelerator.is_main_process):
        output_dir, rank, world = Path(cfg.output_dir), accelerator.process_index, accelerator.num_processes
        resume = resume_point(cfg, accelerator)
        set_seed(cfg.seed)  # same initial weights on every rank
        model = start_model(cfg, resume)
        # Data and evaluations are opened before any heavy work so that bad inputs fail fast.
        patch_size = model.chronos_config.output_patch_size
        batches = open_training_data(cfg, patch_size, rank)
        scorer = Scorer(cfg, patch_size, rank, world)
        if cfg.finetune_mode == "lora":  # a resumed run gets its adapters back from the checkpoint below
            model = apply_lora(model, cfg.lora)
        if accelerator.is_main_process:
            write_text(output_dir / RESOLVED_CONFIG, cfg.to_yaml())
        model.to(accelerator.device)
        model.train()
        model = parallelize(model, cfg.parallelism, accelerator)
        # After sharding (FSDP2 replaces parameters with DTensors). Both stay plain, not accelerate-prepared, so
        # the schedule advances exactly once per optimizer step whatever the number of ranks.
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg)
        guard = BadStepGuard(cfg.max_consecutive_bad_steps, settle_every=cfg.log_steps)
        start_step = restore(resume, accelerator, model, optimizer, scheduler, guard)
        log_run(cfg, accelerator, model, batches, scorer)

        monitor = TrainingMonitor(accelerator, output_dir, cfg, data_stats=batches.stats)
        selection = ModelSelection(output_dir, scorer.metric, cfg.early_stopping_patience, start_step,
                                   cfg.benchmark_top_k)
        summary = RunSummary(output_dir, cfg.max_steps, start_step, accelerator.is_main_process)
        if start_step == 0 and not cfg.random_init and scorer.metric and selection.start_score is None:
            # Score the starting model before any step: the export falls back on it if nothing beats it.
            logger.info("Scoring the starting model (%s) before the first step", cfg.model_id)
            selection.record(0, scorer.run(0, model, accelerator, monitor), accelerator.is_main_process)

        def checkpoint(step: int) -> None:
            guard.settle()
            check_disk_space(output_dir, model, world)
            save_checkpoint(accelerator, model, optimizer, scheduler, cfg, step,
                            {"data": {"seed": cfg.seed, "batches_consumed": step * cfg.gradient_accumulation_steps},
                             "bad_steps": guard.total})
            summary.update(step, monitor.last_logged_loss, guard.total)

        data = batch_iterator(batches, cfg.dataloader_num_workers,
                              start_batch=start_step * cfg.gradient_accumulation_steps)
        step, status = start_step, "finished"
        with PreemptionHandler(world) as preemption:
            for step in range(start_step + 1, cfg.max_steps + 1):
                if selection.should_stop_early():  # also a rerun of a run that stopped early: nothing left to train
                    selection.log_early_stop(step - 1, start_step)
                    step, status = step - 1, "stopped early"
                    break
                monitor.before_step(step)
                result = train_step(model, data, optimizer, scheduler, accelerator, cfg, guard, step)
                monitor.on_step(step, result.loss, result.grad_norm, result.lr, result.samples, result.data_wait,
                                result.tokens)
                stop = preemption.should_stop()
                validate, benchmark = (False, False) if stop else scorer.due(step)
                saved = step % cfg.save_steps == 0 or validate or benchmark or stop  # a scored step keeps its weights
                if saved:
                    checkpoint(step)
                if stop:
                    summary.update(step, monitor.last_logged_loss, guard.total, status="preempted")
                    raise Preempted(f"preempted at step {step}: {checkpoint_name(step)} written; run the same command "
                                    f"again to resume (exit status {PREEMPTED_EXIT_CODE})")
                if validate or benchmark:
                    scores = scorer.run(step, model, accelerator, monitor, validate, benchmark)
                    selection.record(step, scores, accelerator.is_main_process)
                if saved and accelerator.is_main_process:
                    selection.rotate(cfg.save_total_limit)  # once the step's scores have decided the top-K
            guard.settle()
            monitor.close()
            model, exported = export_model(cfg, selection, accelerator, model, step)
            final = save_final(accelerator, model, cfg, step if exported is None else exported)
            monitor.finish(final)
            summary.update(step, monitor.last_logged_loss, guard.total, status, selection.summary.get("exported"))
        logger.info("Done: %d steps in %.1fs (%d non-finite steps skipped). Final model: %s",
                    step - start_step, summary.leg.seconds, guard.total, final)
        return final  # the process group outlives this frame's model: tsm.train.parallel.end_process_group


@dataclass
class StepResult:
    loss: torch.Tensor  # on the device: reading it is a host sync, left to the monitor's log steps
    grad_norm: torch.Tensor
    lr: float
    samples: int
    data_wait: float
    tokens: tuple[int, int]  # (padding, all) the model processed


def train_step(model: torch.nn.Module, data: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
               accelerator: Accelerator, cfg: TrainConfig, guard: BadStepGuard, step: int) -> StepResult:
    """One optimizer step over `gradient_accumulation_steps` micro-batches; a non-finite step is skipped."""
    accum = cfg.gradient_accumulation_steps
    step_loss = torch.zeros((), device=accelerator.device)
    samples, data_wait, padding, tokens = 0, 0.0, 0, 0
    for micro in range(accum):
        waited = time.perf_counter()
        batch = next(data)
        data_wait += time.perf_counter() - waited
        samples += batch["context"].shape[0]
        batch_padding, batch_tokens = batch.pop(TOKEN_COUNTS, (0, 0))
        padding, tokens = padding + batch_padding, tokens + batch_tokens
        batch = {k: v.to(accelerator.device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        # Gradients are all-reduced only on the last micro-batch of an accumulation window.
        sync = contextlib.nullcontext() if micro == accum - 1 else no_gradient_sync(model, accelerator)
        with sync:
            loss = model(**batch).loss / accum
            accelerator.backward(loss)
        step_loss += loss.detach()
    grad_norm = clip_grad_norm(model, cfg.max_grad_norm)
    lr = scheduler.get_last_lr()[0]  # the rate this step uses (logged as such, as HF's Trainer does)
    optimizer.found_inf = guard.found_inf(step, step_loss, grad_norm)  # NaN/inf: the update is skipped
    optimizer.step()
    del optimizer.found_inf  # as torch's GradScaler does: the attribute is for this step only
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(step_loss, grad_norm, lr, samples, data_wait, (padding, tokens))


def start_accelerator(cfg: TrainConfig) -> Accelerator:
    """The Accelerator and the process-wide settings a run needs."""
    mixed = cfg.mixed_precision
    if mixed == "auto":
        mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accelerator = Accelerator(mixed_precision=mixed)
    transformers.utils.logging.disable_progress_bar()  # per-checkpoint bars would flood training.log
    _limit_cpu_threads(accelerator)
    if cfg.tf32 and torch.cuda.is_available():
        enable_tf32()
    if torch.cuda.is_available():
        choose_attention_backends()
    return accelerator


def enable_tf32() -> None:
    """TF32 matmuls and convolutions through the legacy setters, which both APIs read back. The new
    `fp32_precision` setters make the legacy getters raise ("mix of the legacy and new APIs"), and inductor in
    torch 2.10/2.11 still calls `torch.get_float32_matmul_precision()` when it autotunes a matmul: the first
    compiled step failed (pytorch#166387; tests/bench/test_gpu_tf32.py shows it on torch 2.11)."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def _limit_cpu_threads(accelerator: Accelerator) -> None:
    """Several CPU ranks on one machine must share its cores: oversubscribed ranks wait on each other in
    every all-reduce (measured here: 2 ranks x 2 threads on 2 cores ran 20x slower than 2 x 1)."""
    if accelerator.device.type != "cpu" or accelerator.num_processes == 1:
        return
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    fair = max(1, (os.cpu_count() or 1) // local_ranks)
    if torch.get_num_threads() > fair:
        logger.warning("%d CPU ranks x %d threads exceed %d cores: using %d threads per rank",
                       local_ranks, torch.get_num_threads(), os.cpu_count(), fair)
        torch.set_num_threads(fair)


def resume_point(cfg: TrainConfig, accelerator: Accelerator) -> Path | None:
    """The checkpoint this run continues from (None: a fresh start), after the main process has undone what
    a crash left in output_dir; refuses to mix two runs in one folder."""
    if accelerator.is_main_process:
        recover(cfg.output_dir)
    accelerator.wait_for_everyone()
    explicit = None
    if cfg.resume_from_checkpoint not in (None, "auto"):
        explicit = check_resumable(cfg.resume_from_checkpoint)
    newest = find_resume_checkpoint(cfg)  # also refuses an output_dir that holds another run
    found = explicit or (newest if cfg.resume_from_checkpoint == "auto" else None)
    if found is not None:
        check_same_architecture(found, cfg)
    return found


def start_model(cfg: TrainConfig, resume: Path | None) -> torch.nn.Module:
    """The model at the run's lengths: the resumed checkpoint's weights, else random init or model_id."""
    if resume is None:
        return create_model(cfg)
    model = load_model(str(resume))
    set_forecast_lengths(model, cfg.context_length, cfg.prediction_length)
    return model


def open_training_data(cfg: TrainConfig, output_patch_size: int, rank: int) -> TrainingBatches:
    if not cfg.training_data_paths:
        raise ConfigError("training_data_paths is empty: give at least one corpus folder in the config")
    corpora = [ArrowCorpus(path) for path in cfg.training_data_paths]
    return TrainingBatches(
        corpora, cfg.mixture_weights,
        context_length=cfg.context_length, prediction_length=cfg.prediction_length, min_past=cfg.min_past,
        short_context_share=cfg.short_context_share, batch_size=cfg.per_device_train_batch_size,
        output_patch_size=output_patch_size, seed=cfg.seed, length_group_batches=cfg.length_group_batches,
        rank=rank, max_series_per_corpus=cfg.max_train_series,
        # Validation without data of its own holds out the last window of each training series.
        hold_out=cfg.prediction_length if cfg.validates and cfg.validation_data_paths is None else 0,
    )


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases, norms and embeddings (the usual transformer recipe).
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "shared" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel runs on CUDA and, in torch >= 2.4, on CPU (3-4x faster than foreach there).
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             eps=cfg.adam_epsilon, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    return get_scheduler(_SCHEDULERS[cfg.lr_scheduler_type], optimizer,
                         num_warmup_steps=int(cfg.warmup_ratio * cfg.max_steps), num_training_steps=cfg.max_steps)


def restore(resume: Path | None, accelerator: Accelerator, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: Any, guard: BadStepGuard) -> int:
    """Load the resume checkpoint's model, optimizer, scheduler, RNG and counters; returns its step (0: none)."""
    if resume is None:
        return 0
    state = load_checkpoint(resume, accelerator.unwrap_model(model), optimizer, scheduler,
                            accelerator.process_index)
    if state["rng"] is not None:
        set_rng_state(state["rng"])
    if state.get("world_size") != accelerator.num_processes:
        logger.warning("Resuming a %s-rank run on %d ranks: data order differs from the original run",
                       state.get("world_size"), accelerator.num_processes)
    guard.total = int(state.get("bad_steps", 0))
    logger.info("Resumed from %s at step %d (%d non-finite steps skipped before)", resume, state["step"],
                guard.total)
    return int(state["step"])


def log_run(cfg: TrainConfig, accelerator: Accelerator, model: torch.nn.Module, batches: TrainingBatches,
            scorer: Scorer) -> None:
    accum, ranks = cfg.gradient_accumulation_steps, accelerator.num_processes
    logger.info(
        "Training %s parameters on %s (%d process%s, mixed precision %s) for %d steps\n"
        "  context %d, prediction %d, global batch %d series (%d per device x %d accumulation x %d ranks)\n"
        "Training data:\n%s%s",
        f"{count_parameters(model):,}", accelerator.device, ranks, "" if ranks == 1 else "es",
        accelerator.mixed_precision, cfg.max_steps, cfg.context_length, cfg.prediction_length,
        cfg.per_device_train_batch_size * accum * ranks, cfg.per_device_train_batch_size, accum, ranks,
        batches.describe(), f"\nValidation: {scorer.validation.summary}" if scorer.validation else "",
    )


def export_model(cfg: TrainConfig, selection: ModelSelection, accelerator: Accelerator, model: torch.nn.Module,
                 last_step: int) -> tuple[torch.nn.Module, int | None]:
    """The weights final-checkpoint gets and the step they come from (None: the last step's, as trained)."""
    exported = selection.export_step(cfg.exports_best)
    if exported == 0:  # nothing beat the start: export the starting model itself
        model = create_model(cfg)
    elif exported is not None and exported != last_step:
        load_model_weights(Path(cfg.output_dir) / checkpoint_name(exported), accelerator.unwrap_model(model))
    if selection.metric:
        verdict = selection.finish(exported, accelerator.is_main_process)
        (logger.warning if exported == 0 else logger.info)(verdict)
    return model, exported
