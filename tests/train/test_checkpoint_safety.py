"""Resuming reads trainer_state.pt and rng_state_{rank}.pt with torch.load(weights_only=True): a checkpoint
someone else wrote cannot run code, and a genuine one still resumes."""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import random_walks, tiny_config, write_corpus
from tsm.config import ConfigError
from tsm.train.checkpoint import TRAINER_STATE, rng_state, set_rng_state
from tsm.train.loop import train


class RunsCode:
    """Unpickling this (weights_only=False) runs `code`: what a malicious checkpoint file would hold."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def crafted(marker: Path) -> dict:
    return {"step": 2, "scheduler": {}, "payload": RunsCode(f"open({str(marker)!r}, 'w').close()")}


@pytest.fixture(scope="module")
def module_corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus", random_walks(64, 200, 400))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, module_corpus) -> Path:
    """A real checkpoint-2 from a tiny 2-step run."""
    out = tmp_path_factory.mktemp("safety") / "run"
    train(tiny_config(module_corpus, out, max_steps=2, save_steps=2))
    return out / "checkpoint-2"


def copy_of(checkpoint: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(checkpoint, tmp_path / "src" / checkpoint.name))


def resume(corpus: Path, ckpt: Path, out: Path, max_steps: int = 4) -> Path:
    return train(tiny_config(corpus, out, max_steps=max_steps, save_steps=2, resume_from_checkpoint=str(ckpt)))


def test_the_crafted_file_would_run_code_if_loaded_unsafely(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(crafted(marker), tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()  # so the refusals below are real


@pytest.mark.parametrize("name", [TRAINER_STATE, "rng_state_0.pt"])
def test_a_crafted_state_file_is_refused_without_running_it(tmp_path, checkpoint, module_corpus, name):
    ckpt = copy_of(checkpoint, tmp_path)
    marker = tmp_path / "pwned"
    torch.save(crafted(marker), ckpt / name)
    with pytest.raises(ConfigError, match="not a safe tsm checkpoint state") as refused:
        resume(module_corpus, ckpt, tmp_path / "resumed")
    assert str(ckpt / name) in str(refused.value) and "builtins.exec" in str(refused.value)
    assert not marker.exists()


def test_a_genuine_checkpoint_resumes(tmp_path, checkpoint, module_corpus):
    final = resume(module_corpus, copy_of(checkpoint, tmp_path), tmp_path / "resumed")
    assert (final / "model.safetensors").is_file()
    assert "Resumed from" in (tmp_path / "resumed" / "training.log").read_text()


def test_rng_files_of_the_earlier_format_still_resume(tmp_path, checkpoint, module_corpus):
    ckpt = copy_of(checkpoint, tmp_path)
    old = torch.load(ckpt / "rng_state_0.pt", weights_only=True)
    set_rng_state(old)
    old["numpy"] = np.random.get_state()  # numpy's own tuple, as tsm wrote it before
    torch.save(old, ckpt / "rng_state_0.pt")
    resume(module_corpus, ckpt, tmp_path / "resumed")
    assert "Resumed from" in (tmp_path / "resumed" / "training.log").read_text()


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.normal()  # a cached gaussian is part of numpy's state too
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.normal(), np.random.randint(1 << 30), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (random.random(), np.random.normal(), np.random.randint(1 << 30), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])
