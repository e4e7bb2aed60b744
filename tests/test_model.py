import math

import pytest
import torch
from chronos import BaseChronosPipeline, Chronos2Pipeline

from tsm.config import ConfigError, ModelArchConfig
from tsm.model import build_model, load_model, set_forecast_lengths

ARCH = ModelArchConfig(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, max_output_patches=2)


def test_build_model_sizes_match_design():
    small = build_model(ModelArchConfig(d_model=512, d_ff=2048, num_layers=6, num_heads=8), 2048)
    assert round(sum(p.numel() for p in small.parameters()) / 1e6, 1) == 28.3
    assert small.chronos_config.context_length == 2048
    assert small.config.chronos_config["context_length"] == 2048


def test_context_transition_trains_and_saves_at_new_length(tmp_path):
    model = build_model(ARCH.model_copy(update={"time_encoding_scale": 512}), 128)
    set_forecast_lengths(model, 512, 100)
    # forward() reads the dataclass copy: a 512-step context must give 512/16 patches, not 128/16.
    context = torch.randn(3, 512)
    _, _, _, num_context_patches = model.encode(context, num_output_patches=math.ceil(100 / 16))
    assert num_context_patches == 512 // 16
    assert model.chronos_config.max_output_patches == 7
    model.save_pretrained(tmp_path)
    reloaded = load_model(str(tmp_path))
    assert reloaded.chronos_config.context_length == 512
    assert reloaded.config.chronos_config["context_length"] == 512
    assert reloaded.chronos_config.max_output_patches == 7
    # The time encoding scale is kept: known positions keep their encoding after the extension.
    assert reloaded.chronos_config.time_encoding_scale == 512


def test_extending_past_the_time_encoding_scale_is_refused():
    model = build_model(ARCH, 128)  # scale defaults to the context: 128
    with pytest.raises(ConfigError, match="context_length 512 exceeds the model's time_encoding_scale 128"):
        set_forecast_lengths(model, 512, 100)
    assert model.chronos_config.context_length == 128  # nothing changed


def test_a_config_whose_context_exceeds_its_time_encoding_scale_is_refused(tmp_path):
    from tsm.config import load_config

    with pytest.raises(ConfigError, match="context_length 2048 exceeds model.time_encoding_scale 1024"):
        load_config(None, settings={"context_length": 2048, "model.time_encoding_scale": 1024})


def test_saved_model_loads_in_chronos_pipelines(tmp_path):
    model = build_model(ARCH, 128)
    model.save_pretrained(tmp_path)
    for cls in (BaseChronosPipeline, Chronos2Pipeline):
        pipeline = cls.from_pretrained(tmp_path)
        assert isinstance(pipeline, Chronos2Pipeline)
        q, _ = pipeline.predict_quantiles([torch.randn(200)], prediction_length=20, quantile_levels=[0.1, 0.5, 0.9])
        assert q[0].shape == (1, 20, 3)


def test_missing_checkpoint_folder_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint folder"):
        load_model(str(tmp_path / "nope" / "final-checkpoint"))


def test_folder_without_config_is_clear(tmp_path):
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ConfigError, match="no config.json"):
        load_model(str(tmp_path))


def test_non_chronos2_checkpoint_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
              ).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="not a Chronos-2 checkpoint"):
        load_model(str(tmp_path))


def test_a_shorter_training_context_never_shortens_the_model():
    model = build_model(ARCH, 1024)
    set_forecast_lengths(model, 256, 16)
    assert model.chronos_config.context_length == 1024 and model.config.chronos_config["context_length"] == 1024
    _, _, _, num_context_patches = model.encode(torch.randn(2, 1024), num_output_patches=1)
    assert num_context_patches == 1024 // 16
