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
