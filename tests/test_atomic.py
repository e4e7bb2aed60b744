"""Writes that appear at once, and the one recovery that undoes what a crash left."""

import contextlib
import errno
import json
import os
import resource
import signal

import datasets
import pytest

from tsm.atomic import recover, replace_folder, write_json, write_text
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


@contextlib.contextmanager
def files_limited_to(size: int):
    """Writes past `size` bytes fail with EFBIG (the OS's file-size limit), as a full disk or a kill mid-write
    would stop them: the payload is cut by the kernel, not by a mock."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


# A payload far past the limit below: its write fails part way, after the first 64 KiB reached the disk.
LIMIT = 64 * 1024
WRITERS = {
    "write_text": lambda path: write_text(path, "x" * (16 * LIMIT)),
    "write_json": lambda path: write_json(path, {"rows": ["y" * 1024] * 16 * 64}),
}


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
def test_a_write_failing_midway_leaves_the_old_version_whole(tmp_path, writer):
    path = tmp_path / "record.json"
    write_json(path, {"version": 1})
    old_inode = path.stat().st_ino
    with files_limited_to(LIMIT), pytest.raises(OSError) as failure:
        writer(path)
    assert failure.value.errno == errno.EFBIG  # it did fail part way through the content
    assert json.loads(path.read_text()) == {"version": 1}  # a reader still sees the old, complete version
    assert path.stat().st_ino == old_inode
    # nothing at all where no version existed before: never a partial file under the final name
    with files_limited_to(LIMIT), pytest.raises(OSError):
        writer(tmp_path / "new.json")
    assert not (tmp_path / "new.json").exists()


@pytest.mark.parametrize("writer", WRITERS.values(), ids=WRITERS.keys())
def test_a_complete_write_arrives_by_rename_as_a_new_file(tmp_path, writer):
    path = tmp_path / "record.json"
    write_json(path, {"version": 1})
    old_inode = path.stat().st_ino
    writer(path)
    # a new file renamed over the old one (a reader holding the old one keeps reading it whole), not the old
    # file truncated and rewritten in place
    assert path.stat().st_ino != old_inode and path.stat().st_size > LIMIT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]  # no temporary left behind
