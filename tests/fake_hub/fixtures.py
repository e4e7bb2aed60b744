"""Fixtures of the loopback hub. huggingface_hub and datasets read HF_ENDPOINT when they are imported, so code
that loads data through them runs in a process of its own with `hub_environment(hub, home)`; code that takes
the endpoint as an argument (HfApi(endpoint=...), tsm push) runs here with HF_ENDPOINT set."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pytest

from tests.fake_hub.data import (
    benchmark_configs,
    chronos_datasets_repo,
    fev_datasets_repo,
    training_corpus_configs,
)
from tests.fake_hub.server import FakeHub

REPO = Path(__file__).resolve().parents[2]
CHRONOS_REPO = "autogluon/chronos_datasets"
FEV_REPO = "autogluon/fev_datasets"
TOKEN = "hf_tsm_test_token"  # the loopback hub accepts any token; uploads need one, as the real hub's do


def hub_environment(hub: FakeHub, home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment that reaches `hub` and caches under `home` (never the user's own hub cache)."""
    env = dict(os.environ if base is None else base)
    env.update({"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
                "HF_DATASETS_CACHE": str(home / "datasets"), "HF_XET_CACHE": str(home / "xet"),
                "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_TOKEN": TOKEN})
    return env


def closed_port_endpoint() -> str:
    """An endpoint nothing listens at (a port just freed): a connection is refused at once, as on a compute
    node without a route to the hub."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@functools.cache
def chronos_files(benchmarks: tuple[str, ...], training: tuple[str, ...] = ()) -> dict[str, bytes]:
    """autogluon/chronos_datasets with the configs of tsm benchmark files and training corpora (generated once
    per session)."""
    configs = {}
    for benchmark in benchmarks:
        configs.update(benchmark_configs(REPO / benchmark))
    configs.update(training_corpus_configs(training))
    return chronos_datasets_repo(configs)


@functools.cache
def fev_files(task_file: str, repo: str = FEV_REPO) -> dict[str, bytes]:
    """The dataset repo a fev task file's tasks read (generated once per session)."""
    return fev_datasets_repo(REPO / task_file, repo)


@pytest.fixture
def fake_hub():
    """An empty loopback hub for this test (add repos through hub.state.add_repo)."""
    hub = FakeHub()
    yield hub
    hub.stop()
