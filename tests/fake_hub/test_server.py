"""The loopback hub answers the real huggingface_hub client as the hub does: repo info, listings, downloads by
revision, the errors it tells apart (missing repo, revision, file), uploads through create_repo/upload_folder."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from tests.fake_hub.data import PARQUET_NAME, chronos_datasets_repo
from tests.fake_hub.fixtures import TOKEN
from tests.fake_hub.server import git_blob_sha

FILES = chronos_datasets_repo({"m4_hourly": {"num_series": 2, "length": 50, "freq": "h"}})


@pytest.fixture
def api(fake_hub) -> HfApi:
    fake_hub.state.add_repo("dataset", "autogluon/chronos_datasets", FILES)
    return HfApi(endpoint=fake_hub.endpoint, token=TOKEN)


def test_info_listing_and_download_by_revision(api, fake_hub, tmp_path):
    info = api.dataset_info("autogluon/chronos_datasets")
    assert len(info.sha) == 40 and {s.rfilename for s in info.siblings} == set(FILES)
    tree = {entry.path: entry for entry in api.list_repo_tree("autogluon/chronos_datasets", repo_type="dataset",
                                                              recursive=True)}
    path = f"m4_hourly/{PARQUET_NAME}"
    assert set(tree) == {"README.md", "m4_hourly", path} and tree[path].size == len(FILES[path])
    assert tree[path].blob_id == git_blob_sha(FILES[path])
    local = api.hf_hub_download("autogluon/chronos_datasets", path, repo_type="dataset", revision=info.sha,
                                cache_dir=tmp_path)
    assert open(local, "rb").read() == FILES[path] and f"/snapshots/{info.sha}/" in local
    assert ("HEAD", f"/datasets/autogluon/chronos_datasets/resolve/{info.sha}/{path}") in fake_hub.state.requests


def test_missing_repo_revision_and_file_are_told_apart(api, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("autogluon/no_such_datasets")
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info("autogluon/chronos_datasets", revision="f" * 40)
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download("autogluon/chronos_datasets", "nope.parquet", repo_type="dataset", cache_dir=tmp_path)


def test_uploads_create_a_repo_and_commit_the_files(api, fake_hub, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "weights.bin").write_bytes(bytes(range(256)) * 10)
    api.create_repo("me/tiny", exist_ok=True)
    api.create_repo("me/tiny", exist_ok=True)  # exists: the hub's 409, taken as fine
    commit = api.upload_folder(folder_path=tmp_path / "model", repo_id="me/tiny", commit_message="first")
    repo = fake_hub.state.repo("model", "me/tiny")
    assert commit.oid == repo.sha and repo.commits[-1][1] == "first"
    assert repo.files["weights.bin"] == bytes(range(256)) * 10 and repo.files["config.json"] == b"{}"
    assert api.model_info("me/tiny").sha == repo.sha
    with pytest.raises(Exception, match="401"):  # no token, no upload
        HfApi(endpoint=fake_hub.endpoint, token=False).create_repo("me/other")
