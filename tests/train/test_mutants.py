"""Behaviour that changed code once got past the suite unnoticed: the held-out validation window, the export
of a mid-run best checkpoint, gradient accumulation, and the `tsm` logger a run leaves behind. Real runs on
tiny configs; every expectation is exact or derived from the run itself."""

from __future__ import annotations

import json
import logging
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed

from tests.conftest import random_walks, save_yaml, tiny_config, write_corpus
from tests.train.test_distributed import CPU_RANKS, LAUNCH
from tests.train.test_loop import max_weight_diff, weights
from tsm.config import ConfigError
from tsm.data.arrow import ArrowCorpus
from tsm.data.batches import TrainingBatches
from tsm.layout import MODEL_SELECTION
from tsm.model import create_model
from tsm.train.loop import build_optimizer, build_scheduler, start_accelerator, train, train_step
from tsm.train.parallel import parallelize
from tsm.train.reliability import BadStepGuard

PREDICTION = 32
HELD_OUT = 10_000.0  # values of the held-out tails start here; everything before them is below


@contextmanager
def model_inputs():
    """What every Chronos2Model.forward receives, read by a forward hook (the forward itself runs as is):
    (training mode, context, future_target) per call."""
    calls: list[tuple[bool, np.ndarray, np.ndarray]] = []

    def record(module, args, kwargs, output):
        if type(module).__name__ == "Chronos2Model":
            calls.append((module.training, kwargs["context"].detach().cpu().numpy().copy(),
                          kwargs["future_target"].detach().cpu().numpy().copy()))

    hook = torch.nn.modules.module.register_module_forward_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        hook.remove()


# --- 1, 2: the last prediction_length steps of each series are validation's and never training's --------------

@pytest.fixture
def marked_corpus(tmp_path: Path) -> tuple[Path, list[int]]:
    """Each value is its own position in the series, plus HELD_OUT in the last PREDICTION steps: a window
    shows exactly where it was cut. Short series, so an unheld training window would often reach the tail."""
    lengths = [int(n) for n in np.random.default_rng(3).integers(100, 141, size=24)]
    rows = []
    for n in lengths:
        series = np.arange(n, dtype=np.float32)
        series[n - PREDICTION:] += HELD_OUT
        rows.append(series)
    return write_corpus(tmp_path / "marked", rows), lengths


def test_validation_scores_exactly_the_held_out_tail_which_training_never_sees(tmp_path, marked_corpus):
    corpus, lengths = marked_corpus
    out = tmp_path / "run"
    with model_inputs() as calls:
        train(tiny_config(corpus, out, prediction_length=PREDICTION, max_steps=2, eval_steps=2, save_steps=100,
                          per_device_train_batch_size=16))
    training = [(c, f) for is_training, c, f in calls if is_training]
    validation = [(c, f) for is_training, c, f in calls if not is_training]
    assert len(training) == 2 and validation
    # Training: 2 steps x 16 windows, none of which reaches into a held-out tail (context or target).
    assert sum(len(c) for c, _ in training) == 32
    for context, future in training:
        assert np.nanmax(context) < HELD_OUT and np.nanmax(future) < HELD_OUT
        assert not np.isnan(future).any()
    # Validation: one window per series, its target the series' last PREDICTION steps, its context what
    # comes just before them (up to context_length 128, or shorter where short_context_share cuts it,
    # NaN-padded on the left).
    cut_points = []
    for context, future in validation:
        for ctx_row, target_row in zip(context, future, strict=True):
            assert target_row.min() >= HELD_OUT  # all of it from the held-out tail
            cut = int(target_row[0] - HELD_OUT)
            np.testing.assert_array_equal(target_row, HELD_OUT + np.arange(cut, cut + PREDICTION, dtype=np.float32))
            seen = ctx_row[~np.isnan(ctx_row)]
            assert 0 < len(seen) <= min(cut, 128)
            np.testing.assert_array_equal(seen, np.arange(cut - len(seen), cut, dtype=np.float32))
            cut_points.append(cut)
    assert sorted(cut_points) == sorted(n - PREDICTION for n in lengths)
    log = (out / "training.log").read_text()
    assert "held out of training" in log and "+held-out validation window (80) skipped" in log


# --- 3: export: best reloads a mid-run best checkpoint -----------------------------------------------------

def mid_run_best_settings(**overrides) -> dict:
    """A run whose best checkpoint is neither the start nor the last step, by construction: linear warmup
    gives step 1 a learning rate of exactly 0 (checkpoint-1 holds the initial weights), then a learning rate
    of 5 wrecks the model (test_finetune relies on the same), so every later validation is far worse or not
    finite at all (never ranked). A random-init run has no start score to fall back on."""
    return {"max_steps": 4, "eval_steps": 1, "save_steps": 100, "export": "best", "warmup_ratio": 0.5,
            "learning_rate": 5.0, **overrides}


def check_mid_run_best_was_exported(out: Path, last: int) -> int:
    chosen = json.loads((out / MODEL_SELECTION).read_text())
    finite = [e for e in chosen["history"] if np.isfinite(e["score"])]
    best = min(finite, key=lambda e: (e["score"], e["step"]))["step"]
    assert 0 < best < last, chosen["history"]  # the construction above holds: the branch under test is taken
    assert chosen["exported"] == f"checkpoint-{best}" and chosen["best_step"] == best
    final = out / "final-checkpoint"
    assert max_weight_diff(final, out / f"checkpoint-{best}") == 0.0
    assert max_weight_diff(final, out / f"checkpoint-{last}") > 0  # not the last weights under another label
    return best


def test_export_best_reloads_a_mid_run_best_checkpoint(tmp_path, corpus):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, **mid_run_best_settings()))
    assert check_mid_run_best_was_exported(out, last=4) == 1
    # checkpoint-1 is the initial model (learning rate 0): the export is that model, not the wrecked one
    set_seed(42)
    initial = create_model(tiny_config(corpus, out)).state_dict()
    exported = weights(out / "final-checkpoint")
    assert max((exported[k] - initial[k]).abs().max().item() for k in exported) == 0.0


@pytest.fixture(scope="module")
def lora_start(tmp_path_factory) -> tuple[Path, Path]:
    """A short-pretrained start (dropout 0: training and validation see the same function) and a corpus of
    one series with exactly one window (min_past 16 + prediction 32 steps), used both to train and to
    validate: validation loss is then the very loss training descends."""
    base = tmp_path_factory.mktemp("lora-start")
    walks = random_walks(64, 200, 400)
    start = train(tiny_config(write_corpus(base / "walks", walks), base / "pre", max_steps=10, save_steps=100,
                              learning_rate=3e-3, **{"model.dropout_rate": 0.0}))
    return start, write_corpus(base / "one-window", [walks[0][: 16 + PREDICTION]])


def lora_mid_run_best_settings(start: Path, one_window: Path, **overrides) -> dict:
    """LoRA adapts a scored start, so checkpoint-1 at learning rate 0 only ties it (a tie never beats the
    start). Linear warmup to 3 over 3 steps: step 2 moves only B (A has no gradient while B is 0) by a
    learning rate of 1, which lowers the loss of the one window; the rates of 2 and 3 that follow wreck it
    (loss 20.3 at the start, 18.3 at step 2, then 277 and 3767 here)."""
    return mid_run_best_settings(
        random_init=False, model_id=str(start), finetune_mode="lora", warmup_ratio=0.75, learning_rate=3.0,
        validation_data_paths=[str(one_window)], validation_metric="loss", save_total_limit=None, **overrides)


def test_export_best_reloads_a_mid_run_best_lora_checkpoint(tmp_path, lora_start):
    start, one_window = lora_start
    out = tmp_path / "lora"
    train(tiny_config(one_window, out, **lora_mid_run_best_settings(start, one_window)))
    check_mid_run_best_was_exported(out, last=4)
    chosen = json.loads((out / MODEL_SELECTION).read_text())
    assert chosen["beat_start"] and chosen["history"][1]["score"] == chosen["start_score"]  # step 1 tied


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_export_best_reloads_a_mid_run_best_checkpoint_on_two_fsdp_ranks(tmp_path, corpus, lora_start, mode):
    """The reload of a sharded model (and of sharded LoRA adapters), then the full state gathered for the
    export, on 2 real gloo ranks."""
    out = tmp_path / mode
    settings = (mid_run_best_settings() if mode == "full" else lora_mid_run_best_settings(*lora_start))
    data = corpus if mode == "full" else lora_start[1]
    config = save_yaml(tiny_config(data, out, **settings, **{"parallelism.strategy": "fsdp"}),
                       tmp_path / "run.yaml")
    result = subprocess.run([*LAUNCH, "-m", "tsm.train", "--config", str(config)], capture_output=True, text=True,
                            timeout=900, env=CPU_RANKS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "FSDP2: 2 encoder blocks + root sharded over 2 ranks" in (out / "training.log").read_text()
    check_mid_run_best_was_exported(out, last=4)


# --- 5: gradient accumulation is the larger batch --------------------------------------------------------

def test_accumulating_k_micro_batches_is_one_step_on_their_concatenation(tmp_path, corpus):
    """k micro-batches of b series give the loss and the gradient of one batch of k*b series. Dropout off and
    full contexts everywhere (min_past = context_length), so the two differ only by float summation order;
    gradients are read from AdamW's first moment after the step, (1 - beta1) * gradient, with clipping off."""
    k, b = 4, 4
    settings = {"min_past": 128, "max_grad_norm": 1e6, "model.dropout_rate": 0.0}
    source = TrainingBatches([ArrowCorpus(corpus)], [1.0], context_length=128, prediction_length=32, min_past=128,
                             batch_size=b, output_patch_size=16, seed=0)
    micro = [source.batch(i) for i in range(k)]
    assert all(m["context"].shape == (b, 128) for m in micro)
    whole = {key: torch.cat([m[key] for m in micro]) if torch.is_tensor(micro[0][key]) else micro[0][key]
             for key in micro[0]}
    whole["group_ids"] = torch.arange(k * b)  # one group per series, as collate numbers them

    def one_step(accum: int, batch_size: int, batches: list[dict]):
        cfg = tiny_config(corpus, tmp_path / f"accum{accum}", gradient_accumulation_steps=accum,
                          per_device_train_batch_size=batch_size, **settings)
        accelerator = start_accelerator(cfg)
        set_seed(cfg.seed)
        model = parallelize(create_model(cfg).train(), cfg.parallelism, accelerator)
        optimizer = build_optimizer(model, cfg)
        result = train_step(model, iter(batches), optimizer, build_scheduler(optimizer, cfg), accelerator, cfg,
                            BadStepGuard(cfg.max_consecutive_bad_steps, cfg.log_steps), step=1)
        gradients = {name: optimizer.state[p]["exp_avg"] / (1 - cfg.adam_beta1)
                     for name, p in model.named_parameters()}
        return result, gradients

    accumulated, grads = one_step(k, b, micro)
    single, reference = one_step(1, k * b, [whole])
    assert accumulated.samples == single.samples == k * b
    assert accumulated.loss.item() == pytest.approx(single.loss.item(), rel=1e-6)
    assert accumulated.grad_norm.item() == pytest.approx(single.grad_norm.item(), rel=1e-5)
    largest = max(g.abs().max().item() for g in reference.values())
    assert largest > 0
    for name, g in reference.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5 * largest, msg=name)


# --- 6: a run leaves the `tsm` logger as it found it -------------------------------------------------------

def test_a_run_gives_the_tsm_logger_back_as_it_found_it(tmp_path, corpus, caplog):
    """Training points `tsm` at training.log and stops it propagating while it runs; afterwards, finished or
    failed, the caller's logging (here pytest's caplog, at the root) must see tsm's records again."""
    logger = logging.getLogger("tsm")
    before = (logger.handlers[:], logger.propagate, logger.level)
    train(tiny_config(corpus, tmp_path / "run", max_steps=1, save_steps=10))
    assert (logger.handlers, logger.propagate, logger.level) == before
    with pytest.raises(ConfigError, match="validation data"):
        train(tiny_config(corpus, tmp_path / "bad", eval_steps=1, validation_data_paths=[str(tmp_path / "none")]))
    assert (logger.handlers, logger.propagate, logger.level) == before
    with caplog.at_level(logging.WARNING, logger="tsm"):
        logger.warning("seen by the caller")
    assert "seen by the caller" in caplog.text
