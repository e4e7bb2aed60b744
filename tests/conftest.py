from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from tests.fake_hub.fixtures import fake_hub  # noqa: F401 - the loopback hub fixture, for every test
from tsm.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "config" / "training" / "chronos2-test.yaml"

datasets.disable_progress_bars()


def write_corpus(path: Path, rows: list, **columns) -> Path:
    """A corpus on disk exactly as users make one: datasets' save_to_disk."""
    datasets.Dataset.from_dict({"target": rows, **columns}).save_to_disk(str(path))
    return path


def random_walks(n: int, lo: int, hi: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.cumsum(rng.normal(size=rng.integers(lo, hi + 1))).astype("float32") + 100 for _ in range(n)]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus", random_walks(64, 200, 400))


def tiny_config(data: Path, output_dir: Path, **overrides) -> TrainConfig:
    """The project's test config, shrunk so a step takes milliseconds."""
    base = {
        "training_data_paths": [str(data)], "probability": None, "output_dir": str(output_dir),
        "context_length": 128, "prediction_length": 32, "min_past": 16, "per_device_train_batch_size": 8,
        "max_steps": 6, "save_steps": 3, "log_steps": 2,
        "model.d_model": 64, "model.d_kv": 16, "model.d_ff": 128, "model.num_heads": 4, "model.num_layers": 2,
    }
    base.update(overrides)
    return load_config(TEST_CONFIG, base)


def save_tiny_chronos2(folder: Path, quantiles: list[float], dropout_rate: float = 0.0) -> Path:
    """A randomly initialised one-layer Chronos-2 (context 128, patches of 16) saved as a checkpoint folder that
    Chronos2Pipeline.from_pretrained loads: a model for evaluation tests, whose scores no test hard-codes."""
    import torch
    from chronos.chronos2 import Chronos2CoreConfig, Chronos2Model

    torch.manual_seed(0)
    config = Chronos2CoreConfig(
        d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4, dropout_rate=dropout_rate,
        chronos_config={"context_length": 128, "input_patch_size": 16, "input_patch_stride": 16,
                        "output_patch_size": 16, "quantiles": quantiles, "use_reg_token": True, "use_arcsinh": True,
                        "max_output_patches": 4},
    )
    config.chronos_pipeline_class = "Chronos2Pipeline"
    config.architectures = ["Chronos2Model"]
    Chronos2Model(config).save_pretrained(folder)
    return folder


def save_yaml(cfg: TrainConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path
