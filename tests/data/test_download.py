"""Download logic: the fast failure against real unreachable endpoints, the probes against the loopback hub, and the
save/marker/skip logic on real local `datasets.Dataset`s (the hub loader is swapped for a local one)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from tests.conftest import REPO
from tsm.data.arrow import ArrowCorpus, DataError
from tsm.data.download import (
    HubDataset,
    download,
    download_dataset,
    is_complete,
    probe_hub,
    save_download,
)
from tsm.hub import DOWNLOAD_MARKER, read_download_marker

M4 = HubDataset("autogluon/chronos_datasets", "m4_hourly")


def _local_dataset(n: int = 5, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict({"id": [f"s{i}" for i in range(n)],
                                       "target": [rng.normal(size=20).astype("float32") for _ in range(n)]})


class LocalLoader:
    """Stands in for datasets.load_dataset; counts calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, dataset: HubDataset) -> datasets.Dataset:
        self.calls.append(dataset.name)
        return _local_dataset(seed=len(self.calls))


# ------------------------------------------------------------------------------------ no network, fast
def test_cli_fails_fast_when_the_endpoint_port_is_closed(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}
    result = subprocess.run([sys.executable, "-m", "tsm.cli", "data", "download", "--root", str(tmp_path / "root"),
                             "--benchmark", str(REPO / "config/benchmarks/lite.yaml")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr
    assert "could not reach the Hugging Face hub at http://127.0.0.1:9" in message
    # fast on any machine: it stops at the refusal itself, not after waiting out the probe's deadline
    assert "Connection refused" in message and "no answer within" not in message
    assert "tsm data synth" in message and "tsm data build-offline" in message and "HTTPS_PROXY" in message
    assert not (tmp_path / "root").exists()


def test_https_proxy_is_honoured(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "NO_PROXY", "no_proxy")}
    env["HTTPS_PROXY"] = "http://127.0.0.1:9"  # a closed proxy: refused, where going direct would fail on DNS
    result = subprocess.run([sys.executable, "-m", "tsm.cli", "data", "download", "--root", str(tmp_path),
                             "--dataset", "m4_hourly"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "through proxy http://127.0.0.1:9" in result.stderr and "Connection refused" in result.stderr


def probe_deadline(timeout: float) -> float:
    """The longest a probe with `timeout` may take, generously: its deadline (the timeout plus a second of grace,
    for a DNS lookup that ignores socket timeouts) twice over. Waiting is not computing, so a slower machine
    barely moves it."""
    return 2 * (timeout + 1.0)


def test_unresolvable_host_fails_fast():
    began = time.monotonic()
    with pytest.raises(DataError, match="could not reach the Hugging Face hub at https://no-such-host.invalid"):
        probe_hub(M4.repo, endpoint="https://no-such-host.invalid", timeout=1)
    assert time.monotonic() - began < probe_deadline(1)


def test_a_server_that_never_answers_is_given_up_on_after_the_timeout():
    with socket.socket() as server:  # accepts connections (backlog) but never replies
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        began = time.monotonic()
        with pytest.raises(DataError, match="could not reach"):
            probe_hub(M4.repo, endpoint=f"http://127.0.0.1:{server.getsockname()[1]}", timeout=1)
        assert 1 <= time.monotonic() - began < probe_deadline(1)  # it waited for the answer, then gave up


def test_hf_endpoint_from_the_environment_is_honoured(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(DataError, match="127.0.0.1:9"):
        probe_hub(M4.repo, timeout=2)


def test_hub_offline_mode_is_named(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE is set"):
        probe_hub(M4.repo, timeout=1)


# ------------------------------------------------------------------------------------ save and marker
def test_save_download_writes_a_loadable_folder_and_the_marker_last(tmp_path):
    folder = save_download(_local_dataset(), tmp_path / "m4_hourly", M4, sha="abc123")
    marker = json.loads((folder / DOWNLOAD_MARKER).read_text())
    assert marker["repo"] == M4.repo and marker["name"] == "m4_hourly" and marker["num_rows"] == 5
    assert marker["sha"] == "abc123" and set(marker["files"]) >= {"dataset_info.json", "state.json"}
    assert is_complete(folder, M4)
    assert len(ArrowCorpus(folder)) == 5  # the trainer / evaluator read it as any corpus
    assert not is_complete(folder, HubDataset("other/repo", "m4_hourly"))
    assert not is_complete(folder, HubDataset(M4.repo, "m4_hourly", revision="v2"))
    assert is_complete(folder, HubDataset(M4.repo, "m4_hourly", revision="abc123"))
    assert [p.name for p in tmp_path.iterdir()] == ["m4_hourly"]  # no temporary folder left


@pytest.mark.parametrize("damage", ["no marker", "truncated marker", "missing data file"])
def test_half_written_downloads_never_look_complete(tmp_path, damage):
    folder = save_download(_local_dataset(), tmp_path / "m4_hourly", M4)
    if damage == "no marker":
        (folder / DOWNLOAD_MARKER).unlink()
    elif damage == "truncated marker":
        (folder / DOWNLOAD_MARKER).write_text((folder / DOWNLOAD_MARKER).read_text()[:30])
    else:
        next(folder.glob("*.arrow")).unlink()
    assert not is_complete(folder, M4)
    hub = LocalLoader()
    _, fetched = download_dataset(M4, tmp_path, load=hub)
    assert fetched and hub.calls == ["m4_hourly"] and is_complete(folder, M4)


def test_an_interrupted_save_leaves_no_complete_looking_folder(tmp_path, monkeypatch):
    def crash(self, path, **kwargs):
        Path(path).mkdir()
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", crash)
    with pytest.raises(KeyboardInterrupt):
        save_download(_local_dataset(), tmp_path / "m4_hourly", M4)
    assert not (tmp_path / "m4_hourly").exists()
    assert not is_complete(tmp_path / "m4_hourly", M4)


def test_download_skips_what_is_complete_without_touching_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any probe would fail
    save_download(_local_dataset(), tmp_path / "m4_hourly", M4)
    hub = LocalLoader()
    assert download([M4], tmp_path, load=hub) == {"m4_hourly": "already complete"}
    assert hub.calls == []


def test_download_fetches_what_is_missing_and_probes_each_repo_once(tmp_path, monkeypatch, fake_hub):
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)  # the probes ask the loopback hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    extra = "autogluon/chronos_datasets_extra"
    shas = {repo: fake_hub.state.add_repo("dataset", repo, {"README.md": b"#"}).sha for repo in (M4.repo, extra)}
    wanted = [M4, HubDataset(M4.repo, "nn5"), HubDataset("autogluon/chronos_datasets_extra", "solar")]
    save_download(_local_dataset(), tmp_path / "m4_hourly", M4)
    (tmp_path / "nn5").mkdir()  # a leftover from an interrupted run
    (tmp_path / "nn5" / "state.json").write_text("{}")
    hub = LocalLoader()
    status = download(wanted, tmp_path, load=hub)
    assert status == {"m4_hourly": "already complete", "nn5": "downloaded", "solar": "downloaded"}
    assert hub.calls == ["nn5", "solar"]
    assert fake_hub.requested("/api/datasets/") == [("GET", f"/api/datasets/{repo}") for repo in (M4.repo, extra)]
    assert json.loads((tmp_path / "nn5" / DOWNLOAD_MARKER).read_text())["sha"] == shas[M4.repo]
    assert json.loads((tmp_path / "solar" / DOWNLOAD_MARKER).read_text())["sha"] == shas[extra]
    assert download(wanted, tmp_path, load=hub) == dict.fromkeys(status, "already complete")
    assert hub.calls == ["nn5", "solar"]


# ------------------------------------------------------------------------------------ the loopback hub
def test_the_probe_reads_the_repo_sha_from_the_hub_and_names_a_missing_repo(fake_hub, monkeypatch):
    repo = fake_hub.state.add_repo("dataset", M4.repo, {"README.md": b"# m4"})
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert probe_hub(M4.repo, timeout=5) == repo.sha
    with pytest.raises(DataError, match=f"dataset repo autogluon/nope was not found at {fake_hub.endpoint}"):
        probe_hub("autogluon/nope", timeout=5)


def test_missing_only_keeps_data_another_tool_wrote_and_fetches_the_rest(fake_hub, tmp_path, monkeypatch):
    """An offline build (data files, no download marker) counts as there: completed from the hub, never
    replaced; without --missing-only the same folder is fetched again (it is no download of this tool's)."""
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    fake_hub.state.add_repo("dataset", M4.repo, {"README.md": b"# m4"})
    built = tmp_path / "nn5"
    _local_dataset(seed=7).save_to_disk(str(built))  # as tsm data build-offline leaves a dataset
    wanted = [HubDataset(M4.repo, "nn5"), M4]
    hub = LocalLoader()
    assert download(wanted, tmp_path, load=hub, missing_only=True) == {"nn5": "already present",
                                                                       "m4_hourly": "downloaded"}
    assert hub.calls == ["m4_hourly"] and read_download_marker(built) is None
    assert len(fake_hub.requested(f"/api/datasets/{M4.repo}")) == 1  # probed once, for what was missing
    assert download(wanted, tmp_path, load=hub) == {"nn5": "downloaded", "m4_hourly": "already complete"}
    probes = len(fake_hub.requested("/api/datasets/"))
    assert download(wanted, tmp_path, load=hub, missing_only=True) == {"nn5": "already complete",
                                                                       "m4_hourly": "already complete"}
    assert len(fake_hub.requested("/api/datasets/")) == probes  # nothing to fetch: the hub is not asked
