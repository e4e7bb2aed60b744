"""One rule for "local folder or hub id", shared by the trainer, the evaluator and the workflow."""

import json
import threading

import pytest

from tsm.config import ConfigError
from tsm.eval.benchmark import load_forecaster
from tsm.hub import DOWNLOAD_MARKER, is_hub_id, is_hub_repo_id, is_local_model, read_download_marker, run_with_deadline
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


def test_repo_ids_follow_the_hubs_spelling_even_where_a_folder_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "me" / "model").mkdir(parents=True)
    assert is_hub_repo_id("me/model") and not is_hub_id("me/model")  # a push target, though a local folder
    assert not any(is_hub_repo_id(name) for name in ("no-owner", "a/b/c", "/abs/x", "./me/model", "me/"))


def test_a_call_with_a_deadline_hands_back_its_result_its_error_or_that_it_did_not_finish():
    assert run_with_deadline(lambda: 42, 60) == (True, 42)
    finished, outcome = run_with_deadline(lambda: 1 / 0, 60)
    assert finished and isinstance(outcome, ZeroDivisionError)
    release = threading.Event()
    try:  # blocked until released: whatever the deadline, it has not finished by then
        assert run_with_deadline(release.wait, 0.01) == (False, None)
    finally:
        release.set()


def test_the_download_marker_is_read_only_when_it_is_whole(tmp_path):
    assert read_download_marker(tmp_path) is None  # any folder tsm data download did not write
    marker = {"repo": "autogluon/chronos_datasets", "name": "m4_hourly", "sha": "abc"}
    (tmp_path / DOWNLOAD_MARKER).write_text(json.dumps(marker))
    assert read_download_marker(tmp_path) == marker
    for damaged in (json.dumps(marker)[:20], "[1, 2]"):
        (tmp_path / DOWNLOAD_MARKER).write_text(damaged)
        assert read_download_marker(tmp_path) is None
