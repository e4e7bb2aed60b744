"""Fine-tuning from a checkpoint: LoRA, validation, early stopping, never-worse export, longer context."""

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from chronos import Chronos2Pipeline
from peft import PeftModel
from safetensors.torch import load_file

from tests.conftest import random_walks, save_yaml, tiny_config, write_corpus
from tsm.config import ConfigError
from tsm.layout import MODEL_SELECTION as SELECTION_FILE
from tsm.model import load_model
from tsm.provenance import read_provenance
from tsm.train.checkpoint import load_model_weights
from tsm.train.loop import train
from tsm.train.lora import ADAPTER_FOLDER, apply_lora


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus", random_walks(64, 200, 400))


@pytest.fixture(scope="module")
def start(tmp_path_factory, data) -> Path:
    """A small pretrained Chronos-2 to fine-tune (context 128, prediction 32)."""
    out = tmp_path_factory.mktemp("start") / "pre"
    return train(tiny_config(data, out, max_steps=30, save_steps=100, learning_rate=3e-3))


def finetune_config(data: Path, start: Path, out: Path, **overrides):
    settings = {"random_init": False, "model_id": str(start), "max_steps": 8, "save_steps": 100,
                "learning_rate": 1e-3, "warmup_ratio": 0.0, **overrides}
    return tiny_config(data, out, **settings)


def selection(out: Path) -> dict:
    return json.loads((out / SELECTION_FILE).read_text())


def predict(pipeline: Chronos2Pipeline) -> torch.Tensor:
    walk = torch.randn(90, generator=torch.Generator().manual_seed(0)).cumsum(0) + 10
    series = [torch.linspace(0, 6, 150).sin() * 5 + 40, walk]
    quantiles, _ = pipeline.predict_quantiles(series, prediction_length=32, quantile_levels=[0.1, 0.5, 0.9])
    return torch.stack(quantiles)


def test_lora_trains_only_adapters_and_the_merged_export_predicts_as_the_adapted_model(tmp_path, data, start):
    out = tmp_path / "lora"
    final = train(finetune_config(data, start, out, finetune_mode="lora", export="last", save_steps=8,
                                  learning_rate=1e-2))
    # The checkpoint holds base weights and adapters: load it into the start model with fresh adapters.
    adapted = apply_lora(load_model(str(start)), tiny_config(data, out).lora)
    load_model_weights(out / "checkpoint-8", adapted)
    initial = load_file(start / "model.safetensors")
    base = {name.replace("base_model.model.", "").replace(".base_layer", ""): p
            for name, p in adapted.named_parameters() if "lora_" not in name}
    assert base.keys() == initial.keys()
    assert max((base[k] - initial[k]).abs().max().item() for k in base) == 0.0  # the base stayed frozen
    # B starts at zero, so a non-zero B trained. Group attention over univariate series attends to one row,
    # where softmax is constant: its q and k get no gradient but rounding noise (~1e-12 without dropout, which
    # Adam scales up to ~1e-6 steps), far below what every other adapter learns.
    trained = {name.split(".lora_B")[0].replace("base_model.model.", ""): p.abs().max().item()
               for name, p in adapted.named_parameters() if "lora_B" in name}
    constant = {f"encoder.block.{i}.layer.1.self_attention.{m}" for i in range(2) for m in "qk"}
    assert constant <= trained.keys()
    assert max(trained[n] for n in constant) < 1e-3 * min(v for n, v in trained.items() if n not in constant)
    # The exported folder has the adapters merged and loads without peft; the adapters alone load with peft.
    assert not (final / "adapter_config.json").exists() and (final / ADAPTER_FOLDER / "adapter_config.json").is_file()
    merged = predict(Chronos2Pipeline.from_pretrained(final))
    assert torch.allclose(merged, predict(Chronos2Pipeline(adapted.eval())), atol=1e-4)
    from_adapters = PeftModel.from_pretrained(load_model(str(start)), final / ADAPTER_FOLDER).eval()
    assert torch.allclose(merged, predict(Chronos2Pipeline(from_adapters)), atol=1e-4)
    assert not torch.allclose(merged, predict(Chronos2Pipeline.from_pretrained(start)), atol=1e-3)


def test_validation_scores_the_start_then_every_eval_steps_and_exports_the_best(tmp_path, data, start):
    out = tmp_path / "full"
    final = train(finetune_config(data, start, out, max_steps=8, eval_steps=4))
    chosen = selection(out)
    assert [e["step"] for e in chosen["history"]] == [0, 4, 8]
    best = min(chosen["history"], key=lambda e: (e["score"], e["step"]))
    assert chosen["metric"] == "validation_wql" and chosen["start_score"] == chosen["history"][0]["score"]
    exported = "start" if best["step"] == 0 else f"checkpoint-{best['step']}"
    assert chosen["exported"] == exported and chosen["beat_start"] == (best["step"] > 0)
    source = start if best["step"] == 0 else out / f"checkpoint-{best['step']}"
    a, b = load_file(final / "model.safetensors"), load_file(source / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    log = (out / "training.log").read_text()
    assert "Validation at step 0: loss=" in log and "Validation at step 8: loss=" in log
    assert "held out of training" in log
    # the closing health report carries the latest validation and the start's WQL
    assert re.search(r"VALIDATION +at step 8: +loss [0-9.]+ +wql [0-9.]+ +\(start: wql [0-9.]+\)", log)


def test_when_nothing_beats_the_start_the_start_is_exported_and_early_stopping_ends_the_run(tmp_path, data, start):
    out = tmp_path / "diverged"
    # A learning rate this large wrecks the model at once: no evaluation can beat the start.
    cfg = finetune_config(data, start, out, max_steps=40, eval_steps=2, early_stopping_patience=2,
                          learning_rate=5.0, max_grad_norm=100.0)
    final = train(cfg)
    chosen = selection(out)
    assert [e["step"] for e in chosen["history"]] == [0, 2, 4]  # stopped after 2 evaluations without improvement
    assert chosen["exported"] == "start" and chosen["beat_start"] is False
    assert all(e["score"] > chosen["start_score"] for e in chosen["history"][1:])
    initial, exported = load_file(start / "model.safetensors"), load_file(final / "model.safetensors")
    assert max((initial[k] - exported[k]).abs().max().item() for k in initial) == 0.0
    # The exported start never saw this run's data: its provenance lists only what the start was trained on.
    provenance = read_provenance(final)
    assert provenance["step"] == 0 and provenance["corpora"] == []
    assert [c["path"] for c in provenance["inherited"]] == [str(data.resolve())]
    log = (out / "training.log").read_text()
    assert "Early stopping at step 4" in log and "Nothing beat the start" in log
    assert "final-checkpoint holds the starting model" in log
    train(cfg)  # running the same command again resumes the run, which has nothing left to do
    assert "This run stopped early at step 4; nothing left to train" in (out / "training.log").read_text()
    assert selection(out)["history"] == chosen["history"]


def test_validation_data_paths_are_used_instead_of_holding_out(tmp_path, data, start):
    validation = write_corpus(tmp_path / "val", random_walks(10, 100, 120, seed=5))
    out = tmp_path / "val-run"
    train(finetune_config(data, start, out, max_steps=4, eval_steps=4, validation_data_paths=[str(validation)]))
    log = (out / "training.log").read_text()
    assert f"Validation: 10 windows of 10 series from {validation}" in log and "held out" not in log
    with pytest.raises(ConfigError, match="validation data .*missing"):
        train(finetune_config(data, start, tmp_path / "bad", eval_steps=4,
                              validation_data_paths=[str(tmp_path / "missing")]))


def test_longer_context_and_horizon_are_trained_not_only_saved(tmp_path, data, start):
    seen = []

    def count_patches(module, args, kwargs, output):
        if type(module).__name__ == "Chronos2Encoder" and module.training:
            seen.append(output.last_hidden_state.shape[1])

    hook = torch.nn.modules.module.register_module_forward_hook(count_patches, with_kwargs=True)
    try:
        final = train(finetune_config(data, start, tmp_path / "longer", context_length=256, prediction_length=64,
                                      max_steps=6, per_device_train_batch_size=16))
    finally:
        hook.remove()
    # encoder tokens = context patches + 1 register token + output patches (patch size 16)
    assert max(seen) == 256 // 16 + 1 + 64 // 16
    assert max(seen) > 128 // 16 + 1 + 32 // 16  # what the start model would have seen
    config = json.loads((final / "config.json").read_text())["chronos_config"]
    assert config["context_length"] == 256 and config["max_output_patches"] >= 4


@pytest.mark.e2e
def test_a_covariate_that_drives_the_target_is_learned(tmp_path, start):
    # The target is the known-future covariate plus a level: unforecastable from its own past alone.
    rng = np.random.default_rng(1)
    targets, covariates = [], []
    for _ in range(64):
        x = rng.normal(0, 5, size=int(rng.integers(200, 400)))
        targets.append((x + 50 + rng.normal(0, 0.05, x.size)).astype("float32"))
        covariates.append(x[None].astype("float32"))
    corpus = write_corpus(tmp_path / "covariates", targets, feat_dynamic_real=covariates)
    out = tmp_path / "covariate-run"
    train(finetune_config(corpus, start, out, max_steps=200, eval_steps=100, learning_rate=3e-3,
                          per_device_train_batch_size=32))
    chosen = selection(out)
    assert chosen["beat_start"] and chosen["best_score"] < 0.5 * chosen["start_score"], chosen["history"]


def test_lora_settings_are_checked(tmp_path, data, start):
    with pytest.raises(ConfigError, match="lora adapts a pretrained model"):
        tiny_config(data, tmp_path / "x", finetune_mode="lora")
    with pytest.raises(ConfigError, match="early_stopping_patience needs an evaluation"):
        tiny_config(data, tmp_path / "x", early_stopping_patience=2)
    with pytest.raises(ConfigError, match=r"lora.target_modules .*Linear layers of Chronos-2 end in: .*wi"):
        train(finetune_config(data, start, tmp_path / "y", finetune_mode="lora", **{"lora.target_modules": ["qkv"]}))
    train(finetune_config(data, start, tmp_path / "z", finetune_mode="lora", max_steps=2,
                          **{"lora.r": 2, "lora.target_modules": ["self_attention.q"]}))
    assert "LoRA (r=2, alpha=16) on self_attention.q: 1,024 of" in (tmp_path / "z" / "training.log").read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_with_validation_on_two_ranks_scores_as_one_process(tmp_path, data, start, strategy):
    """Validation spread over DDP ranks (or run in lockstep under FSDP) sums to one process' numbers, and
    the LoRA export gathered from the ranks loads without peft."""
    settings = {"finetune_mode": "lora", "max_steps": 4, "eval_steps": 2, "parallelism.strategy": strategy}
    config = save_yaml(finetune_config(data, start, tmp_path / "two", **settings), tmp_path / "two.yaml")
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tsm.train", "--config", str(config)]
    result = subprocess.run(launch, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "ACCELERATE_USE_CPU": "true"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "(2 processes" in (tmp_path / "two" / "training.log").read_text()
    train(finetune_config(data, start, tmp_path / "one", **settings))
    two, one = selection(tmp_path / "two"), selection(tmp_path / "one")
    assert two["start_score"] == pytest.approx(one["start_score"], rel=1e-5)
    final = tmp_path / "two" / "final-checkpoint"
    assert load_file(final / "model.safetensors").keys() == load_file(start / "model.safetensors").keys()
    assert (final / ADAPTER_FOLDER / "adapter_model.safetensors").is_file()
    assert predict(Chronos2Pipeline.from_pretrained(final)).isfinite().all()
