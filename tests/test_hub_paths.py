"""tsm's hub paths through the loopback hub (tests/fake_hub/), in processes of their own as users run them
(huggingface_hub and datasets read HF_ENDPOINT when imported): `tsm data download` of training and benchmark
data, fev tasks read from the hub and from the downloaded copy, and a pushed model read back by its hub id."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from tests.fake_hub.data import PARQUET_NAME
from tests.fake_hub.fixtures import CHRONOS_REPO, FEV_REPO, chronos_files, fev_files, hub_environment
from tsm.data.arrow import ArrowCorpus
from tsm.hub import read_download_marker
from tsm.layout import SEASONAL_NAIVE

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = "config/benchmarks/lite.yaml"
TRAINING = ("training_corpus_kernel_synth_1m", "training_corpus_tsmixup_10m")
FEV_MINI = "config/benchmarks/fev/fev-bench-mini.yaml"


def tsm(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "tsm.cli", *args], env=env, capture_output=True, text=True,
                            timeout=600)
    if check and result.returncode != 0:
        pytest.fail(f"tsm {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def served_targets(files: dict[str, bytes], name: str) -> list[np.ndarray]:
    table = pq.read_table(io.BytesIO(files[f"{name}/{PARQUET_NAME}"]))
    return [np.asarray(v, dtype=np.float64) for v in table.column("target").to_pylist()]


@pytest.fixture
def served(fake_hub, tmp_path):
    """The hub with the Chronos datasets (the lite benchmark's and two training corpora) and fev-bench mini's
    repo; an environment that reaches it."""
    chronos = chronos_files((BENCHMARK,), TRAINING)
    fake_hub.state.add_repo("dataset", CHRONOS_REPO, chronos)
    fake_hub.state.add_repo("dataset", FEV_REPO, fev_files(FEV_MINI))
    return fake_hub, chronos, hub_environment(fake_hub, tmp_path / "hf-home")


@pytest.mark.e2e
def test_download_fetches_training_and_benchmark_data_once(served, tmp_path):
    hub, chronos, env = served
    root = tmp_path / "data"
    out = tsm(env, "data", "download", "--root", str(root), "--dataset", *TRAINING, "--benchmark", BENCHMARK).stdout
    names = [*TRAINING, *(d["name"] for d in yaml.safe_load((REPO / BENCHMARK).read_text())["datasets"])]
    sha = hub.state.repo("dataset", CHRONOS_REPO).sha
    for name in names:
        assert f"downloaded: {root}/{name}" in out
        marker = read_download_marker(root / name)
        assert (marker["repo"], marker["name"], marker["sha"]) == (CHRONOS_REPO, name, sha)
        corpus = ArrowCorpus(root / name)  # the trainer's reader, on exactly the series the hub served
        served_series = served_targets(chronos, name)
        assert len(corpus) == len(served_series)
        for row, values in enumerate(served_series):
            np.testing.assert_array_equal(corpus.item(row).target.ravel(), values.astype(corpus.item(row).target.dtype))
    fetched = len(hub.requested("/resolve/"))
    again = tsm(env, "data", "download", "--root", str(root), "--dataset", *TRAINING, "--benchmark", BENCHMARK)
    assert again.stdout.count("already complete") == len(names)
    assert len(hub.requested("/resolve/")) == fetched  # complete folders: nothing fetched again


@pytest.mark.e2e
def test_fev_tasks_read_from_the_hub_score_as_from_the_downloaded_copy(served, tmp_path):
    """Two fev-bench mini tasks (a multivariate one, one with covariates) scored with data read by fev from the
    hub, then from the copy `tsm data download --benchmark` made, offline: the same scores."""
    hub, _, env = served
    tasks = [t for t in yaml.safe_load((REPO / FEV_MINI).read_text())["tasks"]
             if t["dataset_config"] in ("ETT_1H", "epf_np")]
    task_file = tmp_path / "tasks.yaml"
    task_file.write_text(yaml.safe_dump({"tasks": tasks}))
    empty, root = tmp_path / "empty", tmp_path / "benchmark-data"
    empty.mkdir()
    common = ["evaluate", "--model", SEASONAL_NAIVE, "--benchmark", str(task_file)]
    tsm(env, *common, "--datasets-root", str(empty), "--output", str(tmp_path / "hub.csv"))
    assert hub.requested(f"/datasets/{FEV_REPO}/resolve/")
    tsm(env, "data", "download", "--root", str(root), "--benchmark", str(task_file))
    assert {p.name for p in root.iterdir()} == {"ETT_1H", "epf_np"}
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # as on a compute node
    tsm(offline, *common, "--datasets-root", str(root), "--output", str(tmp_path / "local.csv"))
    from_hub, local = pd.read_csv(tmp_path / "hub.csv"), pd.read_csv(tmp_path / "local.csv")
    assert list(from_hub["dataset"]) == [t["dataset_config"] for t in tasks]
    pd.testing.assert_frame_equal(from_hub, local)
    summaries = pd.read_csv(tmp_path / "local-fev-summaries.csv")
    assert set(summaries["dataset_path"]) == {FEV_REPO}  # read locally, still the hub's task


@pytest.mark.e2e
def test_a_pushed_model_is_read_back_by_its_hub_id(fake_hub, tmp_path):
    """`tsm push` uploads a trained model folder; `tsm evaluate --model OWNER/NAME` then loads it from the hub."""
    from tests.conftest import random_walks, tiny_config, write_corpus
    from tsm.data.competitions import build_competition_dataset
    from tsm.train.loop import train

    folder = train(tiny_config(write_corpus(tmp_path / "walks", random_walks(32, 200, 300)), tmp_path / "run",
                               max_steps=2, save_steps=2))
    env = hub_environment(fake_hub, tmp_path / "hf-home")
    out = tsm(env, "push", "--model", str(folder), "--repo", "me/chronos2-tiny").stdout
    repo = fake_hub.state.repo("model", "me/chronos2-tiny")
    assert repo.sha in out
    assert repo.files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    root = tmp_path / "benchmarks"
    build_competition_dataset("monash_m3_yearly", root)
    benchmark = tmp_path / "tiny.yaml"
    benchmark.write_text(yaml.safe_dump({"name": "tiny", "datasets": [
        {"name": "monash_m3_yearly", "offset": -6, "prediction_length": 6, "num_rolls": 1, "freq": "Y"}]}))
    args = ["evaluate", "--benchmark", str(benchmark), "--datasets-root", str(root)]
    tsm(env, *args, "--model", "me/chronos2-tiny", "--output", str(tmp_path / "hub.csv"))
    assert fake_hub.requested("/me/chronos2-tiny/resolve/")
    tsm(env, *args, "--model", str(folder), "--output", str(tmp_path / "local.csv"))
    from_hub, local = pd.read_csv(tmp_path / "hub.csv"), pd.read_csv(tmp_path / "local.csv")
    assert from_hub[["MASE", "WQL"]].equals(local[["MASE", "WQL"]])  # the same weights, the same forecasts
    assert json.loads(repo.files["config.json"]) == json.loads((folder / "config.json").read_text())


@pytest.mark.e2e
def test_the_workflow_downloads_hub_corpora_through_its_local_rule(served, tmp_path):
    """data.source: hub: download_train fetches the training corpora, one folder per dataset, from the hub."""
    from tests.workflow.conftest import copy_workflow

    hub, chronos, env = served
    workdir = copy_workflow(tmp_path / "repo") if (tmp_path / "repo").mkdir() is None else None
    (workdir / "hub-data.yaml").write_text(yaml.safe_dump({
        "run": "hub", "data": {"source": "hub", "tsmixup": None, "hub_datasets": list(TRAINING)}}))
    result = subprocess.run(["snakemake", "--profile", "profiles/local", "results/hub/data/hub-train",
                             "--configfile", "hub-data.yaml"], cwd=workdir, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sha = hub.state.repo("dataset", CHRONOS_REPO).sha
    for name in TRAINING:
        folder = workdir / "results" / "hub" / "data" / "hub-train" / name
        assert read_download_marker(folder)["sha"] == sha
        assert len(ArrowCorpus(folder)) == len(served_targets(chronos, name))
