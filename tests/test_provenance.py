"""tsm.train.provenance: every model folder a real (tiny) training run writes records its data; the content
fingerprint follows the bytes, not the place; a run started from a tsm model inherits that model's history."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest

import tsm
from tests.conftest import random_walks, tiny_config, write_corpus
from tsm import provenance
from tsm.provenance import (
    PROVENANCE_FILE,
    RANDOM_INIT,
    corpus_record,
    fingerprint,
    read_provenance,
    training_corpora,
)
from tsm.train.loop import train


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("corpora")
    return {"walks": write_corpus(base / "walks", random_walks(64, 200, 400)),
            "other": write_corpus(base / "other", random_walks(40, 150, 300, seed=1))}


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, corpora) -> Path:
    output = tmp_path_factory.mktemp("run") / "stage1"
    return train(tiny_config(corpora["walks"], output, max_steps=6, save_steps=3))


def load(folder: Path) -> dict:
    return json.loads((folder / PROVENANCE_FILE).read_text())


def test_every_checkpoint_and_the_final_model_record_their_training_data(stage1, corpora):
    walks = random_walks(64, 200, 400)
    folders = {"checkpoint-3": 3, "checkpoint-6": 6, "final-checkpoint": 6}
    for name, step in folders.items():
        data = load(stage1.parent / name)
        assert data == read_provenance(stage1.parent / name)
        assert data["schema_version"] == 1 and data["tsm_version"] == tsm.__version__
        assert data["stage"] == "stage1" and data["step"] == step
        assert data["start_model"] == RANDOM_INIT and data["start_provenance"] == "none"
        assert data["created"].endswith("Z") and data["inherited"] == []
        [corpus] = data["corpora"]
        assert corpus["name"] == "walks" and corpus["path"] == str(corpora["walks"].resolve())
        assert corpus["rows"] == 64 and corpus["observations"] == sum(len(w) for w in walks)
        assert corpus["probability"] == 1.0
        assert corpus["fingerprint"] == fingerprint(corpora["walks"])["fingerprint"]
        assert corpus["fingerprint"].startswith("xxh3-128:") and corpus["fingerprint_method"] == "full"
        assert corpus["bytes"] == sum(p.stat().st_size for p in corpora["walks"].glob("*.arrow"))
    # the file sits beside the model's config.json, as a small JSON
    assert (stage1 / "config.json").is_file() and (stage1 / PROVENANCE_FILE).stat().st_size < 4096


def test_fingerprint_follows_content_not_location(tmp_path, corpora):
    original = fingerprint(corpora["walks"])
    copy = shutil.copytree(corpora["walks"], tmp_path / "elsewhere" / "renamed")
    assert fingerprint(copy) == original
    rows = random_walks(64, 200, 400)
    resaved = write_corpus(tmp_path / "resaved", rows)  # the same table written again
    assert fingerprint(resaved) == original
    as_split = tmp_path / "as-split"  # a DatasetDict whose train split holds the same table
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"target": rows})}).save_to_disk(str(as_split))
    assert fingerprint(as_split) == original

    rows[37] = rows[37].copy()
    rows[37][100] += np.float32(0.5)  # one value of one series
    changed = write_corpus(tmp_path / "changed", rows)
    assert fingerprint(changed)["fingerprint"] != original["fingerprint"]
    assert fingerprint(changed)["bytes"] == original["bytes"]


def test_fingerprint_is_cached_per_corpus_state(tmp_path, monkeypatch):
    folder = write_corpus(tmp_path / "c", random_walks(8, 50, 60))
    first = fingerprint(folder)
    calls = []
    real = provenance._fingerprint_cached.__wrapped__
    monkeypatch.setattr(provenance, "_fingerprint_cached", lambda *a: calls.append(a) or real(*a))
    assert fingerprint(folder) == first and len(calls) == 1  # our wrapper bypasses the cache: counts calls
    monkeypatch.undo()
    hits = provenance._fingerprint_cached.cache_info().hits
    fingerprint(folder)
    assert provenance._fingerprint_cached.cache_info().hits == hits + 1  # a second checkpoint: no re-read
    shutil.rmtree(folder)
    write_corpus(folder, random_walks(8, 50, 60, seed=3))  # same path, new content: a new key
    assert fingerprint(folder)["fingerprint"] != first["fingerprint"]


def test_huge_corpora_are_sampled_and_say_so(tmp_path, corpora, monkeypatch):
    monkeypatch.setattr(provenance, "FULL_HASH_MAX_BYTES", 1024)
    sampled = fingerprint(corpora["walks"])
    assert sampled["fingerprint_method"] == "sampled" and sampled["fingerprint"].startswith("xxh3-128-sampled:")
    assert fingerprint(shutil.copytree(corpora["walks"], tmp_path / "copy")) == sampled


def test_a_run_from_a_tsm_model_inherits_its_history(tmp_path, stage1, corpora):
    stage2 = train(tiny_config(corpora["other"], tmp_path / "stage2", random_init=False, model_id=str(stage1),
                               context_length=256, max_steps=2, save_steps=2))
    data = load(stage2)
    assert data["stage"] == "stage2" and data["start_model"] == str(stage1.resolve())
    assert data["start_provenance"] == "found"
    assert [c["name"] for c in data["corpora"]] == ["other"] and data["corpora"][0]["rows"] == 40
    [inherited] = data["inherited"]
    assert inherited["name"] == "walks" and inherited["from_stage"] == "stage1"
    assert inherited["from_model"] == str(stage1.resolve())
    assert inherited["fingerprint"] == fingerprint(corpora["walks"])["fingerprint"]

    # a fine-tune of stage 2 sees both stages' data, newest first
    tuned = train(tiny_config(corpora["walks"], tmp_path / "finetune", random_init=False, model_id=str(stage2),
                              context_length=256, max_steps=1, save_steps=1))
    history = training_corpora(load(tuned))
    assert [(c["name"], c.get("from_stage")) for c in history] == [
        ("walks", None), ("other", "stage2"), ("walks", "stage1")]


def test_a_start_without_provenance_is_flagged(tmp_path, stage1, corpora):
    start = shutil.copytree(stage1, tmp_path / "old-model")
    (start / PROVENANCE_FILE).unlink()
    cfg = tiny_config(corpora["walks"], tmp_path / "ft", random_init=False, model_id=str(start))
    data = provenance.build_provenance(cfg, 0)
    assert data["start_provenance"] == "missing" and data["inherited"] == []
    hub = provenance.build_provenance(cfg.model_copy(update={"model_id": "amazon/chronos-2"}), 0)
    assert hub["start_model"] == "amazon/chronos-2" and hub["start_provenance"] == "none"


def test_read_provenance_of_folders_without_a_readable_file(tmp_path):
    assert read_provenance(tmp_path) is None
    assert read_provenance("amazon/chronos-2") is None
    (tmp_path / PROVENANCE_FILE).write_text("{not json")
    assert read_provenance(tmp_path) is None


def test_corpus_record_counts_rows_and_observations(tmp_path):
    rows = [np.arange(n, dtype=np.float32) for n in (10, 20, 30)]
    record = corpus_record(write_corpus(tmp_path / "three", rows))
    assert (record["name"], record["rows"], record["observations"]) == ("three", 3, 60)


def test_an_unreadable_corpus_is_recorded_by_name(tmp_path):
    cfg = tiny_config(tmp_path / "gone", tmp_path / "out")
    data = provenance.build_provenance(cfg, 1)
    [corpus] = data["corpora"]
    assert corpus["name"] == "gone" and "error" in corpus and "fingerprint" not in corpus
