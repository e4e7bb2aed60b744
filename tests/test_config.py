from pathlib import Path

import pytest

from tests.conftest import TEST_CONFIG
from tsm.config import ConfigError, TrainConfig, load_config, parse_settings

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "config" / "training").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.max_steps > 0 and cfg.training_data_paths


def test_shipped_configs_cover_every_use():
    names = {p.stem for p in CONFIGS}
    assert {"chronos2-test", "chronos2-small", "chronos2-base", "chronos2-base-stage2", "chronos2-finetune"} <= names


def test_stage2_extends_context_of_base():
    root = CONFIGS[0].parent
    base, stage2 = load_config(root / "chronos2-base.yaml"), load_config(root / "chronos2-base-stage2.yaml")
    assert (base.context_length, stage2.context_length) == (2048, 8192)
    assert not stage2.random_init and stage2.model_id.endswith("stage1/final-checkpoint")
    assert base.model.time_encoding_scale == 8192


def _write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    p = _write(tmp_path, "lerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "lerning_rate" in msg and str(p) in msg and "Did you mean 'learning_rate'" in msg
    assert "Allowed keys" in msg


def test_unknown_nested_key(tmp_path):
    p = _write(tmp_path, "model:\n  n_layers: 3\n")
    with pytest.raises(ConfigError, match=r"model\.n_layers.*Did you mean 'num_layers'"):
        load_config(p)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("max_steps: -5\n", "max_steps"),
        ("learning_rate: fast\n", "learning_rate"),
        ("lr_scheduler_type: exponential\n", "'linear', 'cosine' or 'constant'"),
        ("training_data_paths: [a, b]\nprobability: [0.5]\n", "one probability per path"),
        ("training_data_paths: [a, b]\nprobability: [0.5, 0.6]\n", "sum to 1"),
        ("random_init: false\n", "model_id"),
        ("model:\n  quantiles: [0.9, 0.1]\n", "strictly increasing"),
        ("- a\n- b\n", "must be a mapping"),
        ("max_steps: [1\n", "not valid YAML"),
    ],
)
def test_bad_values_are_named(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(_write(tmp_path, text))
    assert fragment in str(err.value)
    assert str(tmp_path / "cfg.yaml") in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("no/such/config.yaml")


def test_overrides_win_and_dotted_keys(tmp_path):
    p = _write(tmp_path, "max_steps: 10\nlearning_rate: 1.0e-3\nmodel:\n  d_model: 64\n")
    cfg = load_config(p, {"max_steps": 3, "model.num_layers": 1, "seed": None})
    assert (cfg.max_steps, cfg.learning_rate, cfg.model.d_model, cfg.model.num_layers, cfg.seed) == (3, 1e-3, 64, 1, 42)


def test_exponent_without_dot_parses_as_float(tmp_path):
    # PyYAML reads "1e-3" as a string; the config must still take it as a number.
    assert load_config(_write(tmp_path, "learning_rate: 1e-3\n")).learning_rate == pytest.approx(1e-3)


def test_yaml_round_trip(tmp_path):
    cfg = load_config(CONFIGS[0])
    assert TrainConfig.model_validate(__import__("yaml").safe_load(cfg.to_yaml())) == cfg


def test_monitoring_keys_at_the_top_level_are_shorthand(tmp_path):
    cfg = load_config(_write(tmp_path, "health_report_interval: 20\nmonitoring:\n  grad_explosion_factor: 5\n"))
    assert cfg.monitoring.health_report_interval == 20 and cfg.monitoring.grad_explosion_factor == 5
    assert "health_report_interval" not in cfg.model_dump() and cfg.to_yaml().count("health_report_interval") == 1


def test_mixed_precision_no_as_yaml_writes_it(tmp_path):
    """`mixed_precision: no` in a YAML file (or `--set mixed_precision=no`) reads as false in YAML 1.1."""
    path = tmp_path / "c.yaml"
    path.write_text(TEST_CONFIG.read_text() + "\nmixed_precision: no\n")
    assert load_config(path).mixed_precision == "no"
    assert load_config(TEST_CONFIG, settings=parse_settings(["mixed_precision=no"])).mixed_precision == "no"
