"""Where a model comes from: a local folder or a Hugging Face hub id. One rule, used by the trainer,
the evaluator and the workflow alike.

An existing path is a local folder. Otherwise `owner/name` (one slash, no leading `.`, `/` or `~`) is a hub
id, and anything else names a local folder that does not exist (a bare `foo` is not taken for a hub id:
every Chronos-2 model on the hub has an owner).
"""

from __future__ import annotations

import re
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(model: str) -> bool:
    return not Path(model).expanduser().exists() and bool(_HUB_ID.match(model))


def is_local_model(model: str) -> bool:
    return not is_hub_id(model)


# ---------------------------------------------------------------------------------------------------
# Uploading a model folder
# ---------------------------------------------------------------------------------------------------

# Training state beside the weights in a checkpoint-N folder: for resuming here, not for a model repo.
_NOT_UPLOADED = ["dcp/*", "dcp/**", "trainer_state.pt", "rng_state_*.pt", ".tmp-*"]


def push_model(folder: str | Path, repo: str, *, private: bool = False, revision: str | None = None,
               commit_message: str | None = None, scores_paths: list[str] | None = None,
               timeout: float = 5.0) -> str:
    """Write the folder's model card (with the scores of `scores_paths`, `tsm evaluate` CSVs), then upload the
    folder to the hub repo `repo` with huggingface_hub's own upload. Returns the commit URL. A hub that does
    not answer within `timeout` seconds stops it before anything is sent, with what to do."""
    import os
    import time

    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    from tsm.card import read_scores, write_model_card
    from tsm.config import TsmError
    from tsm.data.download import _run_with_deadline, hub_endpoint
    from tsm.layout import MODEL_CONFIG

    folder = Path(folder)
    if not (folder / MODEL_CONFIG).is_file():
        raise TsmError(f"{folder}: not a model folder (no {MODEL_CONFIG}); push a final-checkpoint or checkpoint-N "
                       "folder written by tsm")
    if not _HUB_ID.match(repo):
        raise TsmError(f"--repo {repo!r}: expected a hub repo id OWNER/NAME (e.g. my-org/chronos2-tiny)")
    try:
        scores = read_scores(scores_paths) if scores_paths else None
    except ValueError as exc:
        raise TsmError(str(exc)) from None
    card = write_model_card(folder, scores, name=repo.split("/")[1])
    endpoint = hub_endpoint()
    ready = (f"nothing was uploaded. The folder and its model card ({card}) are ready; run tsm push again where "
             "the hub is reachable (HTTPS_PROXY for a proxy, HF_ENDPOINT for a mirror).")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise TsmError(f"HF_HUB_OFFLINE is set: {ready}")
    began = time.monotonic()
    finished, outcome = _run_with_deadline(lambda: HfApi(endpoint=endpoint).model_info(repo, timeout=timeout),
                                           timeout + 1.0)
    if not finished:
        raise TsmError(f"could not reach the Hugging Face hub at {endpoint}: no answer within {timeout:.0f} s; {ready}")
    # Not found (a repo to create) or an HTTP error is an answer: the hub is there.
    if isinstance(outcome, BaseException) and not isinstance(outcome, (RepositoryNotFoundError, HfHubHTTPError)):
        raise TsmError(f"could not reach the Hugging Face hub at {endpoint} ({type(outcome).__name__}: {outcome}; "
                       f"after {time.monotonic() - began:.1f} s); {ready}")
    if get_token() is None:
        raise TsmError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)")
    api = HfApi(endpoint=endpoint)
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model", revision=revision,
                             commit_message=commit_message or f"Upload {folder.name} with tsm",
                             ignore_patterns=_NOT_UPLOADED)
    return str(getattr(info, "commit_url", info))
