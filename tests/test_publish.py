"""tsm.publish: what `tsm push` refuses before anything is sent, and what it leaves out of a model repo. Run
without a hub: a closed local port and HF_HUB_OFFLINE (the full `tsm push` on a trained model: test_card.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from huggingface_hub.utils import filter_repo_objects

from tests.fake_hub.fixtures import TOKEN
from tsm.card import CARD_FILE
from tsm.config import TsmError
from tsm.layout import (
    CONFIG_COPY,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    PROVENANCE,
    SHARDED_STATE,
    TRAINER_STATE,
    rng_state_name,
)
from tsm.publish import NOT_UPLOADED, push_model


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """The files of a checkpoint-N folder: the model, and the state for resuming here."""
    folder = tmp_path / "checkpoint-4"
    (folder / SHARDED_STATE).mkdir(parents=True)
    (folder / MODEL_CONFIG).write_text(json.dumps({"num_layers": 2, "d_model": 64}))
    for name in (MODEL_WEIGHTS, CONFIG_COPY, PROVENANCE, TRAINER_STATE, rng_state_name(0), rng_state_name(1),
                 f"{SHARDED_STATE}/__0_0.distcp", ".tmp-partial"):
        (folder / name).write_text("x")
    return folder


def test_only_the_model_and_its_card_are_uploaded(model_folder):
    files = [p.relative_to(model_folder).as_posix() for p in model_folder.rglob("*") if p.is_file()]
    kept = set(filter_repo_objects([*files, CARD_FILE], ignore_patterns=NOT_UPLOADED))  # as upload_folder filters
    assert kept == {MODEL_CONFIG, MODEL_WEIGHTS, CONFIG_COPY, PROVENANCE, CARD_FILE}


@pytest.mark.parametrize("repo, folder, message", [
    ("no-owner", None, "--repo 'no-owner': expected a hub repo id OWNER/NAME"),
    ("me/x", "empty", "not a model folder (no config.json)"),
])
def test_a_bad_repo_or_folder_is_refused_before_anything_is_written(model_folder, tmp_path, repo, folder, message):
    target = tmp_path / folder if folder else model_folder
    target.mkdir(exist_ok=True)
    with pytest.raises(TsmError, match=message.replace("(", r"\(").replace(")", r"\)")):
        push_model(target, repo)
    assert not (target / CARD_FILE).exists()


@pytest.mark.parametrize("environment, message", [
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set: nothing was uploaded"),
    ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
     "could not reach the Hugging Face hub at http://127.0.0.1:9"),  # a closed port: refused at once
])
def test_without_a_hub_the_card_is_written_and_nothing_is_sent(model_folder, monkeypatch, environment, message):
    for name, value in environment.items():
        monkeypatch.setitem(os.environ, name, value)
    with pytest.raises(TsmError, match=message) as error:
        push_model(model_folder, "me/chronos2-tiny", timeout=30)
    card = model_folder / CARD_FILE
    assert "nothing was uploaded" in str(error.value) and str(card) in str(error.value)
    assert "# chronos2-tiny" in card.read_text()  # titled after the repo, ready for the next try


def test_push_uploads_the_model_and_its_card_to_the_hub(model_folder, fake_hub, monkeypatch):
    """Through the loopback hub: the repo is created, one commit holds the model files and the card (no training
    state); pushing again after the weights changed is a new commit on the same repo, pushing an unchanged folder
    none (huggingface_hub compares each file with the hub's)."""
    for name, value in {"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN}.items():
        monkeypatch.setitem(os.environ, name, value)
    url = push_model(model_folder, "me/chronos2-tiny", commit_message="first model")
    repo = fake_hub.state.repo("model", "me/chronos2-tiny")
    assert url == f"{fake_hub.endpoint}/me/chronos2-tiny/commit/{repo.sha}" and repo.commits[-1][1] == "first model"
    uploaded = set(repo.files) - {".gitattributes"}
    assert uploaded == {MODEL_CONFIG, MODEL_WEIGHTS, CONFIG_COPY, PROVENANCE, CARD_FILE}
    assert repo.files[CARD_FILE] == (model_folder / CARD_FILE).read_bytes()
    (model_folder / MODEL_WEIGHTS).write_text("new weights")
    push_model(model_folder, "me/chronos2-tiny")
    assert len(repo.commits) == 3 and repo.files[MODEL_WEIGHTS] == b"new weights"  # created, first, update
    push_model(model_folder, "me/chronos2-tiny")
    assert len(repo.commits) == 3


def test_push_without_a_token_sends_nothing(model_folder, fake_hub, monkeypatch):
    from huggingface_hub import constants

    for name, value in {"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_OFFLINE": "0"}.items():
        monkeypatch.setitem(os.environ, name, value)
    monkeypatch.delitem(os.environ, "HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(model_folder.parent / "no-login" / "token"))  # logged out
    with pytest.raises(TsmError, match="no Hugging Face token"):
        push_model(model_folder, "me/chronos2-tiny")
    assert fake_hub.state.repo("model", "me/chronos2-tiny") is None
    assert fake_hub.requested("/api/repos/create") == []
