"""The training loop: one function you can read at once (in the spirit of nanoGPT and torchtitan)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import get_scheduler

from tsm.config import ConfigError, TrainConfig
from tsm.data.arrow import ArrowCorpus
from tsm.data.batches import TrainingBatches, batch_iterator
from tsm.model import count_parameters, create_model, load_model, set_forecast_lengths
from tsm.train.checkpoint import (
    check_resumable,
    load_checkpoint,
    load_model_weights,
    rotate_checkpoints,
    save_checkpoint,
    save_final,
    set_rng_state,
)
from tsm.train.evaluation import BenchmarkEvaluator, update_best
from tsm.train.lora import apply_lora
from tsm.train.monitor import TrainingMonitor, setup_logging
from tsm.train.parallel import clip_grad_norm, no_gradient_sync, parallelize
from tsm.train.reliability import (
    PREEMPTED_EXIT_CODE,
    BadStepGuard,
    Preempted,
    PreemptionHandler,
    check_disk_space,
    check_same_architecture,
    find_resume_checkpoint,
    recover_interrupted_writes,
)
from tsm.train.selection import ModelSelection
from tsm.train.validation import ValidationSet

logger = logging.getLogger("tsm")

_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def _mixed_precision(setting: str) -> str:
    if setting == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return setting


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


def open_training_data(cfg: TrainConfig, output_patch_size: int, rank: int) -> TrainingBatches:
    if not cfg.training_data_paths:
        raise ConfigError("training_data_paths is empty: give at least one corpus folder in the config")
    corpora = [ArrowCorpus(path) for path in cfg.training_data_paths]
    return TrainingBatches(
        corpora, cfg.mixture_weights,
        context_length=cfg.context_length, prediction_length=cfg.prediction_length, min_past=cfg.min_past,
        batch_size=cfg.per_device_train_batch_size, output_patch_size=output_patch_size, seed=cfg.seed,
        rank=rank, max_series_per_corpus=cfg.max_train_series,
        # Validation without data of its own holds out the last window of each training series.
        hold_out=cfg.prediction_length if cfg.validates and cfg.validation_data_paths is None else 0,
    )


def resume_point(cfg: TrainConfig) -> Path | None:
    """The checkpoint this run continues from (None: a fresh start); refuses to mix two runs in one folder."""
    explicit = None
    if cfg.resume_from_checkpoint not in (None, "auto"):
        explicit = check_resumable(cfg.resume_from_checkpoint)
    newest = find_resume_checkpoint(cfg)  # also refuses an output_dir that holds another run
    found = explicit or (newest if cfg.resume_from_checkpoint == "auto" else None)
    if found is not None:
        check_same_architecture(found, cfg)
    return found


def train(cfg: TrainConfig) -> Path:
    """Train as configured; returns the `final-checkpoint` folder."""
    accelerator = Accelerator(mixed_precision=_mixed_precision(cfg.mixed_precision))
    transformers.utils.logging.disable_progress_bar()  # per-checkpoint bars would flood training.log
    output_dir = Path(cfg.output_dir)
    setup_logging(output_dir, accelerator.is_main_process)
    _limit_cpu_threads(accelerator)
    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"

    if accelerator.is_main_process:
        recover_interrupted_writes(output_dir)
    accelerator.wait_for_everyone()
    resume = resume_point(cfg)
    set_seed(cfg.seed)  # same initial weights on every rank
    if resume is not None:
        model = load_model(str(resume))
        set_forecast_lengths(model, cfg.context_length, cfg.prediction_length)
    else:
        model = create_model(cfg)
    # Data, validation and benchmarks are opened before any heavy work so that bad inputs fail fast.
    patch_size = model.chronos_config.output_patch_size
    batches = open_training_data(cfg, patch_size, accelerator.process_index)
    # With FSDP every rank must run every forward, so all ranks evaluate all datasets in lockstep.
    spread = cfg.parallelism.strategy != "fsdp"
    rank, world = accelerator.process_index, accelerator.num_processes
    validation = ValidationSet(cfg, patch_size, rank, world, spread) if cfg.validates else None
    evaluator = BenchmarkEvaluator(cfg, rank, world, spread) if cfg.benchmark_config else None
    if cfg.finetune_mode == "lora":  # a resumed run gets its adapters back from the checkpoint below
        model = apply_lora(model, cfg.lora)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "resolved_config.yaml").write_text(cfg.to_yaml())
    model.to(accelerator.device)
    model.train()
    model = parallelize(model, cfg.parallelism, accelerator)
    optimizer = build_optimizer(model, cfg)  # after sharding: FSDP2 replaces parameters with DTensors
    scheduler = get_scheduler(
        _SCHEDULERS[cfg.lr_scheduler_type], optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * cfg.max_steps), num_training_steps=cfg.max_steps,
    )
    # The optimizer and scheduler stay plain (not accelerate-prepared), so the schedule advances exactly
    # once per optimizer step whatever the number of ranks.

    start_step = 0
    if resume is not None:
        state = load_checkpoint(resume, accelerator.unwrap_model(model), optimizer, scheduler,
                                accelerator.process_index)
        start_step = int(state["step"])
        if state["rng"] is not None:
            set_rng_state(state["rng"])
        if state.get("world_size") != accelerator.num_processes:
            logger.warning("Resuming a %s-rank run on %d ranks: data order differs from the original run",
                           state.get("world_size"), accelerator.num_processes)
        logger.info("Resumed from %s at step %d (%d non-finite steps skipped before)", resume, start_step,
                    state.get("bad_steps", 0))

    accum = cfg.gradient_accumulation_steps
    global_batch = cfg.per_device_train_batch_size * accum * accelerator.num_processes
    logger.info(
        "Training %s parameters on %s (%d process%s, mixed precision %s) for %d steps\n"
        "  context %d, prediction %d, global batch %d series (%d per device x %d accumulation x %d ranks)\n"
        "Training data:\n%s%s",
        f"{count_parameters(model):,}", accelerator.device, accelerator.num_processes,
        "" if accelerator.num_processes == 1 else "es", accelerator.mixed_precision, cfg.max_steps,
        cfg.context_length, cfg.prediction_length, global_batch, cfg.per_device_train_batch_size, accum,
        accelerator.num_processes, batches.describe(),
        f"\nValidation: {validation.summary}" if validation else "",
    )

    monitor = TrainingMonitor(accelerator, output_dir, cfg, data_stats=batches.stats)
    # What ranks checkpoints (and decides early stopping and the export): validation when on, else the benchmark.
    ranking = (f"validation_{cfg.validation_metric}" if validation else cfg.benchmark_checkpoint_metric
               if evaluator else None)
    selection = ModelSelection(output_dir, ranking or "", cfg.early_stopping_patience, start_step)

    def save(step: int) -> None:
        check_disk_space(output_dir, model, accelerator.num_processes)
        save_checkpoint(accelerator, model, optimizer, scheduler, cfg, step,
                        {"data": {"seed": cfg.seed, "batches_consumed": step * accum}, "bad_steps": guard.total})

    def evaluate(step: int, validate: bool, benchmark: bool) -> None:
        scores: dict[str, float] = {}
        if validate:
            measured = validation.run(model, accelerator)
            monitor.on_validation(step, measured)
            scores.update({f"validation_{name}": value for name, value in measured.items()})
        if benchmark:
            measured = evaluator.run(accelerator.unwrap_model(model))
            monitor.on_benchmark(step, measured)
            scores.update(measured)
            if not validation:
                scores[ranking] = evaluator.checkpoint_score(measured)
        if ranking in scores:
            selection.record(step, scores[ranking], accelerator.is_main_process)
            if accelerator.is_main_process and step > 0:  # step 0 (the start) has no checkpoint to keep
                update_best(output_dir, step, scores[ranking], scores, ranking, cfg.benchmark_top_k)
                rotate_checkpoints(output_dir, cfg.save_total_limit)  # one may have left the top-K
        accelerator.wait_for_everyone()

    guard = BadStepGuard(cfg.max_consecutive_bad_steps)
    if start_step == 0 and not cfg.random_init and ranking and selection.start_score is None:
        # Score the starting model before any step: the export falls back on it if nothing beats it.
        logger.info("Scoring the starting model (%s) before the first step", cfg.model_id)
        evaluate(0, validation is not None, evaluator is not None)

    data = batch_iterator(batches, cfg.dataloader_num_workers, start_batch=start_step * accum)
    device = accelerator.device
    started = time.perf_counter()
    preemption = PreemptionHandler()
    step = start_step
    last_step = cfg.max_steps
    if selection.should_stop_early():  # a rerun of a run that stopped early has nothing left to train
        logger.info("This run stopped early at step %d; nothing left to train", start_step)
        last_step = start_step
    try:
        for step in range(start_step + 1, last_step + 1):
            step_loss = torch.zeros((), device=device)
            samples = 0
            data_wait = 0.0
            for micro in range(accum):
                waited = time.perf_counter()
                batch = next(data)
                data_wait += time.perf_counter() - waited
                samples += batch["context"].shape[0]
                batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
                # Gradients are all-reduced only on the last micro-batch of an accumulation window.
                sync = contextlib.nullcontext() if micro == accum - 1 else no_gradient_sync(model, accelerator)
                with sync:
                    loss = model(**batch).loss / accum
                    accelerator.backward(loss)
                step_loss += loss.detach()
            grad_norm = clip_grad_norm(model, cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]  # the rate this step uses (logged as such, as HF's Trainer does)
            if guard.check(step, step_loss, grad_norm):  # NaN/inf: skip the update, count it
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            monitor.on_step(step, step_loss, grad_norm, lr, samples, data_wait)
            stop = preemption.should_stop(accelerator)
            last = step == cfg.max_steps
            validate = validation is not None and not stop and (step % cfg.eval_steps == 0 or last)
            benchmark = evaluator is not None and not stop and (step % cfg.benchmark_eval_steps == 0 or last)
            if step % cfg.save_steps == 0 or validate or benchmark or stop:  # a scored step keeps its weights
                save(step)
            if stop:
                raise Preempted(f"preempted at step {step}: checkpoint-{step} written; run the same command again "
                                f"to resume (exit status {PREEMPTED_EXIT_CODE})")
            if validate or benchmark:
                evaluate(step, validate, benchmark)
                if selection.should_stop_early():
                    logger.info("Early stopping at step %d: %s did not improve in %d evaluations (best: step %d)",
                                step, ranking, cfg.early_stopping_patience, selection.best()["step"])
                    break
    finally:
        preemption.close()
    monitor.close()
    exported = None
    if cfg.exports_best and selection.best() is not None:
        exported = selection.best()["step"]
        if exported == 0:  # nothing beat the start: export the starting model itself
            model = create_model(cfg)
        elif exported != step:
            load_model_weights(output_dir / f"checkpoint-{exported}", accelerator.unwrap_model(model))
    if ranking:
        verdict = selection.finish(exported, accelerator.is_main_process)
        (logger.warning if exported == 0 else logger.info)(verdict)
    final = save_final(accelerator, model, cfg, step if exported is None else exported)
    logger.info("Done: %d steps in %.1fs (%d non-finite steps skipped). Final model: %s",
                step - start_step, time.perf_counter() - started, guard.total, final)
    accelerator.end_training()
    return final
