"""Parity with chronos-forecasting: full fine-tuning with tsm's `train()` gives `Chronos2Pipeline.fit`'s loss curve.

Both fine-tune the same small random checkpoint (dropout 0) with the same optimizer settings: AdamW (fused) at
the same learning rate, linear decay without warmup, weight decay 0 (fit's HF Trainer default), gradient
clipping at 1.0, the same batch size and number of steps, on CPU in fp32.

The two samplers draw windows with different RNGs, so a curve comparison needs batches that do not depend on
the draws:
  * end to end (tsm's own corpus reader and sampler): the data is ONE 4-variate series of exactly
    min_past + prediction_length points. Every draw then picks that series and cuts it at min_past, so every
    batch of both trainers is the same 8 rows (2 groups of 4 variates); the loss still falls step by step
    because the model learns that window.
  * on random windows of random-length series (left padding, many groups, a noisy loss): tsm's sampler is
    replaced by the batches fit's model actually received, so the training loops see the same batch sequence.
The curves agree to float rounding (measured: bitwise equal on CPU), so the tolerance RTOL only absorbs
reduction-order noise; a 1% change of the learning rate or adam_epsilon=1e-6 moves the curve by 2e-3 and 5e-4
(relative), far outside it.

Deliberate difference: tsm exempts the `shared` embedding (the REG token's) from weight decay
(tsm.train.loop.build_optimizer), HF's Trainer decays it. It only matters with weight_decay > 0, which fit does
not use by default; test_weight_decay_groups pins it down.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from chronos import Chronos2Pipeline
from chronos.chronos2.trainer import Chronos2Trainer
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback

from tests.conftest import tiny_config, write_corpus
from tsm.config import ModelArchConfig
from tsm.data.arrow import ArrowCorpus
from tsm.data.batches import TrainingBatches
from tsm.model import build_model
from tsm.report.runfiles import read_scalars
from tsm.train.loop import build_optimizer, train

CONTEXT, PREDICTION, MIN_PAST, BATCH, STEPS, LR = 128, 32, 96, 8, 30, 1e-3
ARCH = ModelArchConfig(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
                       max_output_patches=4)
RTOL, ATOL = 1e-5, 1e-6  # per-step loss and grad norm; final weights


@pytest.fixture(autouse=True)
def isolated():
    # A tiny model: one thread is as fast on an idle machine and ~7x faster on a busy one (measured 3.8 s vs 25 s
    # for test_finetune_loss_curve_matches_fit with other jobs on the 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    # fit and run_tsm leave accelerate's process-wide state on the CPU: later tests must pick their own device.
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("parity") / "checkpoint"
    build_model(ARCH, CONTEXT).save_pretrained(folder)  # build_model marks the config loadable by chronos
    return folder


class _Recorder(TrainerCallback):
    """The batches fit's model receives (a forward pre-hook) and the per-step logs (logging_steps=1)."""

    def __init__(self):
        self.batches: list[dict] = []
        self.logs: list[dict] = []
        self._hook = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def record(module, call_args, call_kwargs):
            self.batches.append({k: v.clone() if torch.is_tensor(v) else v for k, v in call_kwargs.items()})

        self._hook = model.register_forward_pre_hook(record, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        self._hook.remove()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append({"step": state.global_step, **logs})


def run_fit(checkpoint: Path, series: list[np.ndarray], out: Path, **trainer_kwargs):
    recorder = _Recorder()
    pipeline = Chronos2Pipeline.from_pretrained(checkpoint)
    finetuned = pipeline.fit(
        series, prediction_length=PREDICTION, context_length=CONTEXT, min_past=MIN_PAST, batch_size=BATCH,
        num_steps=STEPS, learning_rate=LR, output_dir=out, callbacks=[recorder], remove_printer_callback=True,
        disable_tqdm=True, logging_steps=1, use_cpu=True, **trainer_kwargs)
    assert [log["step"] for log in recorder.logs] == list(range(1, STEPS + 1))
    return recorder, finetuned


def run_tsm(checkpoint: Path, corpus: Path, out: Path, monkeypatch, **overrides):
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # fit trains on the CPU (its pipeline is loaded there)
    AcceleratorState._reset_state(reset_partial_state=True)  # as HF's TrainingArguments does
    cfg = tiny_config(corpus, out, **{
        "random_init": False, "model_id": str(checkpoint), "model": ARCH.model_dump(),
        "context_length": CONTEXT, "prediction_length": PREDICTION, "min_past": MIN_PAST,
        "per_device_train_batch_size": BATCH, "max_steps": STEPS, "learning_rate": LR,
        "lr_scheduler_type": "linear", "warmup_ratio": 0.0, "weight_decay": 0.0, "max_grad_norm": 1.0,
        "mixed_precision": "no", "tf32": False, "log_steps": 1, "save_steps": 10 * STEPS,
        "length_group_batches": 0,  # fit batches windows as drawn: so must tsm, for the same batches
        **overrides})
    final = train(cfg)
    scalars = read_scalars(out / "tensorboard")
    assert scalars["train/loss"].steps.tolist() == list(range(1, STEPS + 1))
    return scalars, final


def fit_curve(recorder: _Recorder, key: str) -> np.ndarray:
    return np.array([log[key] for log in recorder.logs], dtype=np.float64)


def assert_same_curves(recorder: _Recorder, scalars) -> float:
    fit_loss, tsm_loss = fit_curve(recorder, "loss"), scalars["train/loss"].values
    diff = float(np.abs(fit_loss - tsm_loss).max())
    print(f"loss: fit {fit_loss[0]:.4f} -> {fit_loss[-1]:.4f}, tsm {tsm_loss[0]:.4f} -> {tsm_loss[-1]:.4f}, "
          f"max |diff| per step {diff:.3g}")
    np.testing.assert_allclose(tsm_loss, fit_loss, rtol=RTOL, atol=ATOL)
    # Pre-clip norms: both clip with torch's clip_grad_norm_ at 1.0 (clipping is on in most steps).
    np.testing.assert_allclose(scalars["grad/norm"].values, fit_curve(recorder, "grad_norm"), rtol=RTOL, atol=ATOL)
    # The learning rate: the losses pin the rate each step used; the logged value follows one of two conventions
    # (HF logs the rate the step used, tsm the rate after scheduler.step(), i.e. the next step's).
    fit_lr, tsm_lr = fit_curve(recorder, "learning_rate"), scalars["train/lr"].values
    assert np.allclose(tsm_lr, fit_lr, rtol=1e-6) or np.allclose(tsm_lr[:-1], fit_lr[1:], rtol=1e-6), (
        tsm_lr, fit_lr)
    assert np.isclose(fit_lr[0], LR) and fit_lr[-1] < LR / STEPS * 1.01  # linear decay, no warmup
    return diff


def assert_same_weights(tsm_final: Path, finetuned: Chronos2Pipeline) -> None:
    tsm_weights = load_file(tsm_final / "model.safetensors")
    fit_weights = finetuned.model.state_dict()
    assert tsm_weights.keys() == fit_weights.keys()
    for name, value in tsm_weights.items():
        torch.testing.assert_close(value, fit_weights[name], rtol=RTOL, atol=ATOL, msg=name)


def one_window_series() -> np.ndarray:
    """4 variates of exactly min_past + prediction_length points: different levels, scales and shapes."""
    rng = np.random.default_rng(0)
    t = np.arange(MIN_PAST + PREDICTION)
    walks = np.cumsum(rng.normal(size=(4, len(t))), axis=1)
    return np.stack([
        100 + walks[0],
        5 * np.sin(2 * np.pi * t / 24) + walks[1],
        0.01 * t + 0.1 * walks[2],
        -20 + 3 * walks[3],
    ]).astype(np.float32)


def test_finetune_loss_curve_matches_fit(tmp_path, checkpoint, monkeypatch):
    series = one_window_series()
    corpus = write_corpus(tmp_path / "corpus", [series.tolist()])
    recorder, finetuned = run_fit(checkpoint, [series], tmp_path / "fit")
    scalars, final = run_tsm(checkpoint, corpus, tmp_path / "tsm", monkeypatch)

    # The design: every batch fit drew is the one tsm's sampler builds, so the curves are comparable.
    assert len(recorder.batches) == STEPS
    batches = TrainingBatches([ArrowCorpus(corpus)], [1.0], context_length=CONTEXT, prediction_length=PREDICTION,
                              min_past=MIN_PAST, batch_size=BATCH, output_patch_size=ARCH.output_patch_size, seed=42)
    for k in (0, 1, STEPS - 1):
        ours, theirs = batches.batch(k), dict(recorder.batches[k])
        # tsm leaves future_covariates out when no series has any: what fit's all-NaN tensor means to the model
        assert "future_covariates" not in ours and torch.isnan(theirs.pop("future_covariates")).all()
        assert ours.keys() == theirs.keys()
        for key in ours:
            if torch.is_tensor(ours[key]):
                torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, equal_nan=True, msg=key)
            else:
                assert ours[key] == theirs[key], key
    assert recorder.batches[0]["group_ids"].tolist() == [0] * 4 + [1] * 4

    assert_same_curves(recorder, scalars)
    assert_same_weights(final, finetuned)
    loss = scalars["train/loss"].values
    assert loss[-1] < 0.95 * loss[0] and np.all(np.diff(loss) < 0), loss  # it learns, step by step
    assert np.mean(scalars["grad/norm"].values > 1.0) > 0.5  # clipping takes part in the comparison


def test_loss_curve_matches_fit_on_random_windows(tmp_path, checkpoint, monkeypatch):
    rng = np.random.default_rng(1)
    lengths = rng.integers(MIN_PAST + PREDICTION - 20, 3 * CONTEXT, size=24)  # a few too short: skipped
    series = [(rng.normal(0, 50) + rng.uniform(1, 10) * np.sin(2 * np.pi * np.arange(n) / rng.integers(8, 40))
               + 0.3 * np.cumsum(rng.normal(size=n))).astype(np.float32) for n in lengths]
    corpus = write_corpus(tmp_path / "corpus", [s.tolist() for s in series])
    recorder, finetuned = run_fit(checkpoint, series, tmp_path / "fit")
    assert sum(bool(torch.isnan(b["context"]).any()) for b in recorder.batches) > STEPS // 2  # left padding
    # tsm's training loop on the very batches fit's model received (its sampler is checked in the test above).
    monkeypatch.setattr(TrainingBatches, "batch_and_tokens", lambda self, index: (recorder.batches[index], (0, 0)))
    scalars, final = run_tsm(checkpoint, corpus, tmp_path / "tsm", monkeypatch)
    assert_same_curves(recorder, scalars)
    assert_same_weights(final, finetuned)
    loss = scalars["train/loss"].values
    print(f"random windows: loss step-to-step std {np.diff(loss).std():.3f}, "
          f"mean of first/last 10 steps {loss[:10].mean():.3f} / {loss[-10:].mean():.3f}")
    assert np.diff(loss).std() > 0.1 and loss[-10:].mean() < loss[:10].mean(), loss  # noisy, but learning


def test_weight_decay_groups(tmp_path, checkpoint, monkeypatch):
    """With weight decay on, the parameters HF's Trainer decays are tsm's plus the `shared` embedding. Over this
    short run the loss barely notices (measured: 1e-6 apart at weight_decay 0.1) but `shared.weight` ends 0.15%
    apart, which assert_same_weights catches; with fit decaying tsm's set, curves and weights agree again (and
    a tsm that decayed nothing would end 1e-4 apart, relative, in the loss)."""
    model = Chronos2Pipeline.from_pretrained(checkpoint).model
    cfg = tiny_config(tmp_path, tmp_path / "unused", weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    tsm_decayed = {names[id(p)] for g in build_optimizer(model, cfg).param_groups if g["weight_decay"] > 0
                   for p in g["params"]}
    hf_decayed = set(Trainer.get_decay_parameter_names(None, model))
    assert hf_decayed - tsm_decayed == {"shared.weight"} and not tsm_decayed - hf_decayed

    series = one_window_series()
    corpus = write_corpus(tmp_path / "corpus", [series.tolist()])
    hf_names = Chronos2Trainer.get_decay_parameter_names
    monkeypatch.setattr(Chronos2Trainer, "get_decay_parameter_names",
                        lambda self, m: [n for n in hf_names(self, m) if n != "shared.weight"])
    recorder, finetuned = run_fit(checkpoint, [series], tmp_path / "fit", weight_decay=0.1)
    scalars, final = run_tsm(checkpoint, corpus, tmp_path / "tsm", monkeypatch, weight_decay=0.1)
    assert_same_curves(recorder, scalars)
    assert_same_weights(final, finetuned)
