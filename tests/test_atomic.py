"""Writes that appear at once, and the one recovery that undoes what a crash left."""

import json
import os

import datasets
import pytest

from tsm.atomic import recover, replace_folder, write_json
from tsm.data.writer import save_atomically


def test_recover_puts_back_a_replaced_folder_and_drops_temporaries(tmp_path):
    (tmp_path / ".old-checkpoint-8").mkdir()  # killed between the two renames of a replacement
    (tmp_path / ".old-final-checkpoint").mkdir()  # ... after the new version arrived: the old one goes
    (tmp_path / "final-checkpoint").mkdir()
    (tmp_path / ".tmp-checkpoint-12").mkdir()  # killed mid-write
    (tmp_path / ".tmp-train.1234").mkdir()  # a corpus write of process 1234, killed
    (tmp_path / ".tmp-model-selection.json.99").write_text("{")  # a JSON record, killed mid-write
    recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-8", "final-checkpoint"]


def test_a_crash_mid_replacement_keeps_the_old_version(tmp_path, monkeypatch):
    old, new = tmp_path / "corpus", tmp_path / ".tmp-corpus"
    old.mkdir()
    (old / "v").write_text("1")
    new.mkdir()
    (new / "v").write_text("2")
    real_replace = os.replace

    def crash_on_second(src, dst):
        if os.fspath(src) == os.fspath(new):
            raise KeyboardInterrupt  # the process dies between moving the old aside and the new in
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(new, old)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not old.exists()
    recover(tmp_path)
    assert (old / "v").read_text() == "1" and not (tmp_path / ".old-corpus").exists()


def test_corpus_writer_and_json_records_share_the_naming(tmp_path):
    save_atomically(datasets.Dataset.from_dict({"target": [[1.0, 2.0]]}), tmp_path / "c")
    save_atomically(datasets.Dataset.from_dict({"target": [[3.0]]}), tmp_path / "c")  # a replacement
    write_json(tmp_path / "r.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "r.json"]
    assert datasets.load_from_disk(str(tmp_path / "c"))["target"] == [[3.0]]
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
