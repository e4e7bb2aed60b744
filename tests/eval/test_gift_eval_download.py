"""`tsm data download --gift-eval` / `--gift-eval-pretrain`: the repos' layout (saved-dataset folders at any
depth), read as it is, and the marker that makes a finished copy work offline. The hub itself is not reachable
here: the fetch is `huggingface_hub.snapshot_download`, kept as it is."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from tsm.data.arrow import ArrowCorpus, DataError
from tsm.data.download import GIFT_EVAL_PRETRAIN_REPO, download_repo_snapshot, saved_dataset_folders
from tsm.eval.gift_eval.protocol import GiftEvalDataset
from tsm.eval.gift_eval.synthetic import SYNTHETIC_SETS, write_synthetic_gift_eval
from tsm.hub import DOWNLOAD_MARKER


def test_saved_folders_are_found_at_any_depth_and_read_as_they_are(tmp_path):
    write_synthetic_gift_eval(tmp_path, series_per_set=2)
    assert [str(p.relative_to(tmp_path)) for p in saved_dataset_folders(tmp_path)] == sorted(SYNTHETIC_SETS)
    # a GiftEvalPretrain-like folder (item_id, start, freq, target; a multivariate one too) is a training corpus
    corpus = ArrowCorpus(tmp_path / "ett2/D")
    assert len(corpus) == 2 and GiftEvalDataset(tmp_path, "ett2/D").targets[0].shape == (3, 400)


def test_a_finished_copy_is_complete_offline_and_a_missing_folder_is_fetched(tmp_path, monkeypatch):
    write_synthetic_gift_eval(tmp_path, ["m4_yearly", "hospital"], series_per_set=2)
    (tmp_path / DOWNLOAD_MARKER).write_text(json.dumps({
        "repo": GIFT_EVAL_PRETRAIN_REPO, "folders": ["hospital", "m4_yearly"], "complete_repo": False}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any attempt to reach the hub fails at once
    assert download_repo_snapshot(GIFT_EVAL_PRETRAIN_REPO, tmp_path, folders=["m4_yearly"]) == "already complete"
    with pytest.raises(DataError, match="HF_HUB_OFFLINE is set"):  # not all of the repo: it must go out
        download_repo_snapshot(GIFT_EVAL_PRETRAIN_REPO, tmp_path)
    with pytest.raises(DataError, match="HF_HUB_OFFLINE is set"):
        download_repo_snapshot(GIFT_EVAL_PRETRAIN_REPO, tmp_path, folders=["buildings_900k"])


def test_a_gift_eval_row_with_variates_of_unequal_length_is_refused(tmp_path):
    datasets.Dataset.from_dict({"item_id": ["a"], "freq": ["H"], "target": [[np.arange(5.0), np.arange(4.0)]]}
                               ).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(ValueError, match="row 0's variates have lengths \\[5, 4\\]"):
        _ = GiftEvalDataset(tmp_path, "bad").targets


def test_the_command_fetches_nothing_for_a_finished_copy(tmp_path, monkeypatch, capsys):
    from tsm.cli import main

    write_synthetic_gift_eval(tmp_path, ["m4_yearly"], series_per_set=2)
    (tmp_path / DOWNLOAD_MARKER).write_text(json.dumps({"repo": "Salesforce/GiftEval", "folders": ["m4_yearly"],
                                                        "complete_repo": False}))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["data", "download", "--root", str(tmp_path), "--gift-eval", "m4_yearly"]) == 0
    assert "already complete: Salesforce/GiftEval" in capsys.readouterr().out
