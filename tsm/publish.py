"""`tsm push`: upload a model folder, with its model card, to a Hugging Face hub model repo."""

from __future__ import annotations

import time
from pathlib import Path

from tsm.card import read_scores, write_model_card
from tsm.config import TsmError
from tsm.hub import hub_endpoint, hub_offline, is_hub_repo_id, run_with_deadline
from tsm.layout import MODEL_CONFIG

# Training state beside the weights in a checkpoint-N folder: for resuming here, not for a model repo.
NOT_UPLOADED = ["dcp/*", "dcp/**", "trainer_state.pt", "rng_state_*.pt", ".tmp-*"]


def push_model(folder: str | Path, repo: str, *, private: bool = False, revision: str | None = None,
               commit_message: str | None = None, scores_paths: list[str] | None = None,
               timeout: float = 5.0) -> str:
    """Write the folder's model card (with the scores of `scores_paths`, `tsm evaluate` CSVs), then upload the
    folder to the hub repo `repo` with huggingface_hub's own upload. Returns the commit URL. A hub that does
    not answer within `timeout` seconds stops it before anything is sent, with what to do."""
    from huggingface_hub import HfApi, get_token  # slow to import: only when pushing
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    folder = Path(folder)
    if not (folder / MODEL_CONFIG).is_file():
        raise TsmError(f"{folder}: not a model folder (no {MODEL_CONFIG}); push a final-checkpoint or checkpoint-N "
                       "folder written by tsm")
    if not is_hub_repo_id(repo):
        raise TsmError(f"--repo {repo!r}: expected a hub repo id OWNER/NAME (e.g. my-org/chronos2-tiny)")
    try:
        scores = read_scores(scores_paths) if scores_paths else None
    except ValueError as exc:
        raise TsmError(str(exc)) from None
    card = write_model_card(folder, scores, name=repo.split("/")[1])
    endpoint = hub_endpoint()
    ready = (f"nothing was uploaded. The folder and its model card ({card}) are ready; run tsm push again where "
             "the hub is reachable (HTTPS_PROXY for a proxy, HF_ENDPOINT for a mirror).")
    if hub_offline():
        raise TsmError(f"HF_HUB_OFFLINE is set: {ready}")
    began = time.monotonic()
    finished, outcome = run_with_deadline(lambda: HfApi(endpoint=endpoint).model_info(repo, timeout=timeout),
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
                             ignore_patterns=NOT_UPLOADED)
    return str(getattr(info, "commit_url", info))
