"""Where a model comes from: a local folder or a Hugging Face hub id. One rule, used by the trainer,
the evaluator and the workflow alike.

An existing path is a local folder. Otherwise `owner/name` (one slash, no leading `.`, `/` or `~`) is a hub
id, and anything else names a local folder that does not exist (a bare `foo` is not taken for a hub id:
every Chronos-2 model on the hub has an owner).

Also the few hub facts that downloading (tsm.data.download), fev tasks (tsm.eval.fev_tasks) and publishing
(tsm.publish) share: the endpoint, whether the hub is switched off, a call with a deadline, and the marker
`tsm data download` leaves in every folder it fetched (the training provenance cites the hub dataset in it).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Written last into every folder `tsm data download` saved: which hub dataset (repo, name, sha) it holds.
DOWNLOAD_MARKER = "tsm_download.json"


def is_hub_repo_id(text: str) -> bool:
    """`owner/name` in the hub's spelling, whether or not a local path of that name exists."""
    return bool(_HUB_ID.match(text))


def is_hub_id(model: str) -> bool:
    return not Path(model).expanduser().exists() and is_hub_repo_id(model)


def is_local_model(model: str) -> bool:
    return not is_hub_id(model)


def hub_endpoint() -> str:
    """The endpoint huggingface_hub will use: HF_ENDPOINT if set, else its default."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is set (huggingface_hub's own switch): nothing may be fetched or sent."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def run_with_deadline(fn: Callable[[], object], seconds: float) -> tuple[bool, object]:
    """Run fn in a daemon thread; (finished, result or exception). DNS lookups ignore socket timeouts,
    so only a thread with a deadline bounds every way a hub call can hang."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller to classify
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return False, None
    return True, box.get("error", box.get("result"))


def read_download_marker(folder: str | Path) -> dict | None:
    """The download marker of a folder `tsm data download` fetched; None for any other folder (or a damaged
    marker)."""
    try:
        marker = json.loads((Path(folder) / DOWNLOAD_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None
