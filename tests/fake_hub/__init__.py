"""A small Hugging Face hub served on loopback for the tests (server.py), with repos generated from synthetic
series (data.py). `fake_hub` (fixtures.py, imported by tests/conftest.py) starts one per test on a free port;
`hub_environment` is what a process needs to use it instead of huggingface.co (HF_ENDPOINT, its own caches)."""

from tests.fake_hub.server import FakeHub, HubState, git_blob_sha

__all__ = ["FakeHub", "HubState", "git_blob_sha"]
