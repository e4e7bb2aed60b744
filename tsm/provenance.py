"""Training provenance: what a checkpoint was trained on, in a small JSON beside its config.json.

Every model folder the trainer writes (`checkpoint-N/`, `final-checkpoint/`) gets `training-provenance.json`:
the tsm version, the stage (the output folder's name), the step, the starting model, and per training
corpus its name, absolute path, rows, observations and a content fingerprint. When the run started from a
local model folder that has its own provenance, that folder's corpora (and what it inherited) are listed
under `inherited`, so the whole history of a model is in its newest folder (`tsm evaluate` uses this to
tell in-domain from zero-shot scores).

The fingerprint is an xxh3-128 hash of the bytes of the corpus' Arrow files (the data `datasets`'
save_to_disk writes; its JSON side files hold a random `_fingerprint` and are skipped), in the order of
their paths relative to the corpus folder, each preceded by its size. `save_to_disk` writes identical
bytes for identical data, so a copy, a move or a re-save of the same table gets the same fingerprint, and
any changed value a different one. Measured on 1 GB of float32 series (3 Arrow shards, 2-core VM):
xxh3-128 0.40 s from disk / 0.08 s from the page cache; hashlib blake2b 2.0 / 1.3 s, sha256 1.2 / 0.65 s.
Corpora over FULL_HASH_MAX_BYTES are fingerprinted from their sizes and evenly spaced blocks instead
(method `sampled`, ~0.05 s), so the first checkpoint of a run on a multi-terabyte corpus does not stall
every rank; such a fingerprint still changes with any resize but may miss an edit between blocks. It is
computed once per process and corpus state (cached by path, file sizes and mtimes), not per checkpoint.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

from tsm.atomic import write_json
from tsm.config import TrainConfig
from tsm.data.arrow import ArrowCorpus
from tsm.hub import read_download_marker
from tsm.layout import PROVENANCE as PROVENANCE_FILE

logger = logging.getLogger("tsm")

SCHEMA_VERSION = 1
RANDOM_INIT = "random init"
# Full hashing reads the whole corpus (~2.5 GB/s from a local disk here): above this, sample instead.
FULL_HASH_MAX_BYTES = 32 * 2**30
SAMPLED_BLOCKS_PER_FILE = 256
SAMPLE_BLOCK_BYTES = 1 << 20
_READ_BYTES = 8 << 20


# ---------------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------------


def arrow_files(folder: str | Path) -> list[Path]:
    """The Arrow files of a saved `datasets` folder (any split), ordered by their path inside it."""
    root = Path(folder)
    files = [p for p in root.rglob("*.arrow")
             if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _state_key(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What the cached fingerprint depends on: each Arrow file's relative path, size and mtime."""
    return tuple((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                 for p in arrow_files(folder))


def fingerprint(folder: str | Path) -> dict[str, Any]:
    """{"fingerprint": "xxh3-128:<hex>" (or "xxh3-128-sampled:<hex>"), "fingerprint_method": "full" |
    "sampled", "bytes": total Arrow bytes} of a saved `datasets` folder. Cached per process by path, file
    sizes and mtimes: a run hashes each corpus once however many checkpoints it writes."""
    path = Path(folder).resolve()
    return _fingerprint_of(path, _state_key(path))


def _fingerprint_of(path: Path, key: tuple[tuple[str, int, int], ...]) -> dict[str, Any]:
    if not key:
        raise FileNotFoundError(f"{path}: no Arrow files (expected a folder written by datasets' save_to_disk)")
    return dict(_fingerprint_cached(str(path), key, FULL_HASH_MAX_BYTES))


@lru_cache(maxsize=256)
def _fingerprint_cached(path: str, key: tuple[tuple[str, int, int], ...],
                        full_hash_max_bytes: int) -> tuple[tuple[str, Any], ...]:
    import xxhash  # a dependency of `datasets`, and 5-15x faster than hashlib here (see the module doc)

    total = sum(size for _, size, _ in key)
    sampled = total > full_hash_max_bytes
    digest = xxhash.xxh3_128()
    buffer = bytearray(SAMPLE_BLOCK_BYTES if sampled else _READ_BYTES)
    view = memoryview(buffer)
    for relative, size, _ in key:
        digest.update(size.to_bytes(8, "little"))  # file boundaries count: "ab"+"c" differs from "a"+"bc"
        with open(Path(path) / relative, "rb") as handle:
            if sampled:
                # First and last blocks (Arrow schema and footer) and evenly spaced blocks between.
                last = max(size - SAMPLE_BLOCK_BYTES, 0)
                for k in range(SAMPLED_BLOCKS_PER_FILE):
                    handle.seek(last * k // (SAMPLED_BLOCKS_PER_FILE - 1))
                    read = handle.readinto(buffer)
                    digest.update(view[:read])
            else:
                while read := handle.readinto(buffer):
                    digest.update(view[:read])
    method = "sampled" if sampled else "full"
    prefix = "xxh3-128-sampled" if sampled else "xxh3-128"
    return (("fingerprint", f"{prefix}:{digest.hexdigest()}"), ("fingerprint_method", method), ("bytes", total))


@lru_cache(maxsize=256)
def _count_series(path: str, key: tuple[tuple[str, int, int], ...]) -> tuple[int, int]:
    corpus = ArrowCorpus(path)  # memory-mapped: lengths come from the list offsets, values are not read
    return len(corpus), int(corpus.lengths.sum())


def corpus_record(path: str | Path) -> dict[str, Any]:
    """Name (folder name), absolute path, rows (series) and observations (time steps of the target over all
    series) of the split training reads, and the fingerprint of the whole folder, for one training corpus."""
    resolved = Path(path).resolve()
    record: dict[str, Any] = {"name": resolved.name, "path": str(resolved)}
    key = _state_key(resolved) if resolved.is_dir() else ()
    rows, observations = _count_series(str(resolved), key)
    record.update(rows=rows, observations=observations, **_fingerprint_of(resolved, key))  # one listing
    # A `tsm data download` folder: the hub dataset it holds (model cards cite it).
    marker = read_download_marker(resolved)
    if marker and marker.get("repo"):
        record.update(hub_repo=marker["repo"], hub_config=marker.get("name"), hub_sha=marker.get("sha"))
    return record


# ---------------------------------------------------------------------------------------------------
# Writing and reading
# ---------------------------------------------------------------------------------------------------


def _tsm_version() -> str:
    try:
        from importlib.metadata import version

        return version("tsm")
    except Exception:  # not installed (a source checkout on sys.path): the package's own number
        import tsm

        return tsm.__version__


def _start_model(cfg: TrainConfig) -> tuple[str, Path | None]:
    """The starting model as written in the file, and its local folder (None: random init or a hub id)."""
    if cfg.random_init or not cfg.model_id:
        return RANDOM_INIT, None
    local = Path(cfg.model_id).expanduser()
    if local.is_dir():
        return str(local.resolve()), local.resolve()
    return cfg.model_id, None


def _inherited(start: Path | None) -> tuple[list[dict[str, Any]], str]:
    """The start model's corpora (its own, then what it inherited), each tagged with where it came from;
    and whether that history is known."""
    if start is None:
        return [], "none"
    parent = read_provenance(start)
    if parent is None:
        return [], "missing"
    tag = {"from_stage": parent.get("stage"), "from_model": str(start)}
    own = [{**corpus, **tag} for corpus in parent.get("corpora", [])]
    return own + list(parent.get("inherited", [])), "found"


def build_provenance(cfg: TrainConfig, step: int) -> dict[str, Any]:
    start_text, start_folder = _start_model(cfg)
    inherited, start_provenance = _inherited(start_folder)
    weights = cfg.mixture_weights if cfg.training_data_paths else []
    corpora = []
    # Step 0 is the starting model exported unchanged (nothing beat it): it never saw this run's data.
    trained_on = zip(cfg.training_data_paths, weights, strict=True) if step > 0 else []
    for path, weight in trained_on:
        try:
            record = corpus_record(path)
        except (OSError, ValueError) as error:  # a corpus gone mid-run must not cost the checkpoint
            logger.warning("training provenance: could not read %s (%s); recorded by name and path only", path,
                           error)
            record = {"name": Path(path).resolve().name, "path": str(Path(path).resolve()), "error": str(error)}
        corpora.append({**record, "probability": weight})
    return {
        "schema_version": SCHEMA_VERSION,
        "tsm_version": _tsm_version(),
        "stage": Path(cfg.output_dir).resolve().name,
        "step": int(step),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "start_model": start_text,
        # found: `inherited` is the start's full history; missing: a local start without this file (history
        # unknown); none: random init or a hub model (whose training data tsm cannot know).
        "start_provenance": start_provenance,
        "max_train_series": cfg.max_train_series,
        "corpora": corpora,
        "inherited": inherited,
    }


def write_provenance(folder: Path, cfg: TrainConfig, step: int) -> None:
    """Write `folder/training-provenance.json` (rank 0 only; the fingerprints are cached per run)."""
    write_json(Path(folder) / PROVENANCE_FILE, build_provenance(cfg, step))


def read_provenance(model_folder: str | Path) -> dict[str, Any] | None:
    """The provenance of a model folder; None when it has none (a hub id, an older checkpoint) or the
    file is unreadable (logged)."""
    path = Path(model_folder).expanduser() / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("%s could not be read (%s): treating the model's training data as unknown", path, error)
        return None
    return data if isinstance(data, dict) else None


def training_corpora(provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """Every corpus in a model's history: its own run's first, then the inherited ones."""
    return [*provenance.get("corpora", []), *provenance.get("inherited", [])]
