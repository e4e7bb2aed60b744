"""Real (short) training runs in this process: checkpoints, logs, TensorBoard, exact resume."""

import json
from pathlib import Path

import pytest
import torch
from chronos import Chronos2Pipeline
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import tiny_config
from tsm.config import ConfigError
from tsm.layout import TRAINER_STATE
from tsm.records import TrainingSummary
from tsm.train.loop import train


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def test_run_writes_checkpoints_logs_and_tensorboard(tmp_path, corpus):
    out = tmp_path / "run"
    final = train(tiny_config(corpus, out, max_steps=6, save_steps=2, save_total_limit=2))
    assert final == out / "final-checkpoint"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    for ckpt in (out / "checkpoint-6", final):
        assert (ckpt / "config.json").is_file() and (ckpt / "model.safetensors").is_file()
        assert (ckpt / "tsm_config.yaml").is_file()
    assert (out / "checkpoint-6" / TRAINER_STATE).is_file()
    assert (out / "resolved_config.yaml").read_text().startswith("model_id")
    assert not list(out.glob(".tmp-*"))
    log = (out / "training.log").read_text()
    assert "Step 2/6 | loss=" in log and "Step 6/6 |" in log and "stp/s" in log and "gnorm=" in log
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "train/lr", "grad/norm", "perf/steps_per_s", "perf/samples_per_s"} <= set(tags)
    losses = [e.value for e in events.Scalars("train/loss")]
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6] and all(v > 0 for v in losses)
    # the rate each step used: linear decay without warmup, so step 6 of 6 still trains at 1/6 of the peak
    rates = {e.step: e.value for e in events.Scalars("train/lr")}
    assert rates[6] == pytest.approx(1e-3 / 6) and rates[2] == pytest.approx(1e-3 * 5 / 6)
    pipeline = Chronos2Pipeline.from_pretrained(final)
    q, _ = pipeline.predict_quantiles([torch.randn(100).cumsum(0)], prediction_length=32, quantile_levels=[0.5])
    assert q[0].shape == (1, 32, 1)


def test_training_reduces_loss(tmp_path, corpus):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=40, log_steps=10, save_steps=100, learning_rate=3e-3))
    losses = [e.value for e in EventAccumulator(str(out / "tensorboard")).Reload().Scalars("train/loss")]
    assert losses[-1] < 0.8 * losses[0], losses


# The default suite resumes in this process with accumulation; data-loader worker processes and compiled blocks
# (a compile per run) are end-to-end.
@pytest.mark.parametrize("workers, accum, compiled", [(0, 2, False), pytest.param(2, 2, False, marks=pytest.mark.e2e),
                                                      pytest.param(0, 1, True, marks=pytest.mark.e2e)])
def test_resume_gives_the_straight_run(tmp_path, corpus, workers, accum, compiled):
    # Dropout stays on (0.1): equal weights need the RNG, optimizer, schedule and data position restored.
    # Length grouping is on (the test config's), and the resume point falls inside a group.
    common = dict(max_steps=6, save_steps=3, dataloader_num_workers=workers, gradient_accumulation_steps=accum,
                  lr_scheduler_type="cosine", warmup_ratio=0.2, **{"parallelism.torch_compile": compiled})
    straight = tmp_path / "straight"
    train(tiny_config(corpus, straight, **common))
    # A checkpoint's content does not depend on what ran after it, so resuming from the straight run's
    # checkpoint-3 into a new folder is a run stopped at step 3 and continued.
    resumed = tmp_path / "resumed"
    train(tiny_config(corpus, resumed, **common, resume_from_checkpoint=str(straight / "checkpoint-3")))
    assert max_weight_diff(straight / "final-checkpoint", resumed / "final-checkpoint") == 0.0
    # and the runs did move the weights
    assert max_weight_diff(straight / "checkpoint-3", straight / "final-checkpoint") > 0


def test_context_extension_trains_at_the_new_length(tmp_path, corpus):
    stage1 = train(tiny_config(corpus, tmp_path / "s1", context_length=64, max_steps=2, save_steps=10))
    seen: list[int] = []
    from chronos.chronos2.model import Chronos2Encoder

    original = Chronos2Encoder.forward

    def spy(self, *args, **kwargs):  # observes the real forward; records how many patches it gets
        seen.append(kwargs["inputs_embeds"].shape[1])
        return original(self, *args, **kwargs)

    Chronos2Encoder.forward = spy
    try:
        stage2 = train(tiny_config(corpus, tmp_path / "s2", random_init=False, model_id=str(stage1),
                                   context_length=256, max_steps=16, save_steps=100))  # a whole length group
    finally:
        Chronos2Encoder.forward = original
    saved = json.loads((stage2 / "config.json").read_text())["chronos_config"]
    assert saved["context_length"] == 256
    # series are 200-400 long: with a 256 context some windows fill it, giving 256/16 patches
    # (+1 [REG] +2 output patches); at the old length it could never pass 64/16 + 3.
    assert max(seen) == 256 // 16 + 1 + 2


@pytest.mark.e2e
def test_compiled_blocks_train_as_eager_ones(tmp_path, corpus):
    """torch.compile fuses the blocks' kernels, which reorders float sums only: the first step (same weights, same
    batch) agrees to float32 rounding, and the few steps after stay within a small tolerance."""
    losses = {}
    for compiled in (False, True):
        out = tmp_path / f"compiled-{compiled}"
        train(tiny_config(corpus, out, max_steps=6, log_steps=1, save_steps=100,
                          **{"parallelism.torch_compile": compiled}))
        losses[compiled] = [e.value for e in EventAccumulator(str(out / "tensorboard")).Reload().Scalars("train/loss")]
        assert ("torch.compile: 2 encoder blocks" in (out / "training.log").read_text()) == compiled
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)


def test_resume_rejects_weights_only_folder(tmp_path, corpus):
    final = train(tiny_config(corpus, tmp_path / "a", max_steps=2, save_steps=10))
    with pytest.raises(ConfigError, match="final-checkpoint holds weights only"):
        train(tiny_config(corpus, tmp_path / "b", resume_from_checkpoint=str(final)))


def test_summary_records_each_leg_of_a_resumed_run(tmp_path, corpus):
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=4, save_steps=2))
    first = TrainingSummary.read(out)
    assert [(leg.first_step, leg.last_step, leg.status) for leg in first.legs] == [(0, 4, "finished")]
    # The same run, longer: it resumes from checkpoint-4 and adds a leg.
    train(tiny_config(corpus, out, max_steps=6, save_steps=2))
    summary = TrainingSummary.read(out)
    assert [(leg.first_step, leg.last_step, leg.status) for leg in summary.legs] == [(0, 4, "finished"),
                                                                                   (4, 6, "finished")]
    assert summary.steps == 6 and summary.max_steps == 6 and summary.bad_steps == 0
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    # the last step's loss: each leg writes its own event file, and files of one second sort by process id
    last = max(events.Scalars("train/loss"), key=lambda event: event.step)
    assert summary.last_loss == pytest.approx(last.value)
