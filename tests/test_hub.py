"""One rule for "local folder or hub id", shared by the trainer, the evaluator and the workflow."""

import pytest

from tsm.config import ConfigError
from tsm.eval.benchmark import load_forecaster
from tsm.hub import is_hub_id, is_local_model
from tsm.model import load_model


@pytest.mark.parametrize("name, hub", [
    ("amazon/chronos-2", True), ("autogluon/chronos-bolt-small", True),
    ("foo", False),  # a bare name is a (missing) folder, never a hub id
    ("./amazon/chronos-2", False), ("/abs/model", False), ("~/models/x", False),
    ("results/test/stage2/final-checkpoint", False), ("a/b/", False),
])
def test_the_rule(name, hub):
    assert is_hub_id(name) is hub and is_local_model(name) is not hub


def test_an_existing_folder_shaped_like_a_hub_id_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "amazon" / "chronos-2").mkdir(parents=True)
    assert is_local_model("amazon/chronos-2")


def test_trainer_and_evaluator_agree_on_a_missing_bare_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no such checkpoint folder"):
        load_model("foo")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        load_forecaster("foo")
