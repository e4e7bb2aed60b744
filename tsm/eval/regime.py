"""In-domain or zero-shot: was a benchmark dataset part of a model's training data?

A local model folder written by tsm carries `training-provenance.json` (tsm/provenance.py): the
corpora of its own run and of every run it started from. A benchmark dataset is `in-domain` for that
model when a corpus in that history has the dataset's name (the corpus folder's name) or the same content
fingerprint (the same Arrow bytes wherever they live); otherwise `zero-shot`. Hub models are taken as
zero-shot (tsm cannot know their data), a local folder without the file is `unknown`, and the seasonal
naive baseline has no training data (`n.a.`). When the benchmark's definitions are given, the corpora that
are still on disk are also searched for the datasets' series themselves (tsm.eval.leakage): a dataset some
of whose series a corpus holds under another name, converted or truncated is `in-domain` too, with the
share of its series found in the reason.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tsm.data.arrow import ArrowCorpus, DataError
from tsm.eval.leakage import BenchmarkIndex
from tsm.layout import SEASONAL_NAIVE
from tsm.provenance import fingerprint, read_provenance, training_corpora

logger = logging.getLogger("tsm")

IN_DOMAIN = "in-domain"
ZERO_SHOT = "zero-shot"
UNKNOWN = "unknown"
NOT_APPLICABLE = "n.a."
# Returns {dataset: [(series values, test start)]}: what the series-level check indexes.
SeriesOf = Callable[[], Mapping[str, list[tuple[np.ndarray, int]]]]


@dataclass(frozen=True)
class Regime:
    regime: str
    reason: str  # why, in words (the matching corpus for in-domain)


def dataset_fingerprint(datasets_root: str | Path, name: str) -> str | None:
    """The content fingerprint of a benchmark dataset folder (None when it is not on disk or cannot be read)."""
    if not (Path(datasets_root) / name).is_dir():  # e.g. a fev task read from the hub
        return None
    try:
        return fingerprint(Path(datasets_root) / name)["fingerprint"]
    except OSError as error:
        logger.warning("could not fingerprint benchmark dataset %s: %s", name, error)
        return None


def _describe(corpus: dict) -> str:
    where = f", inherited from {corpus['from_stage']}" if corpus.get("from_stage") else ""
    return f"training corpus '{corpus.get('name')}' ({corpus.get('path')}{where})"


def match(corpora: Sequence[dict], name: str, fingerprint: str | None) -> Regime:
    """The regime of one dataset against a model's training corpora (own and inherited)."""
    for corpus in corpora:
        same_name = corpus.get("name") == name
        same_content = fingerprint is not None and corpus.get("fingerprint") == fingerprint
        if same_name or same_content:
            what = " and ".join(
                part for part, hit in (("name", same_name), ("content fingerprint", same_content)) if hit)
            return Regime(IN_DOMAIN, f"{_describe(corpus)} has the same {what}")
    return Regime(ZERO_SHOT, f"no training corpus of the model ({len(corpora)} in its history) has this "
                             "name or content")


def _series_leakage(series_of: SeriesOf, corpora: Sequence[dict], cache: dict) -> dict[str, str]:
    """{dataset: reason} for the datasets whose series the model's corpora on disk hold (one scan per set of
    corpora: a stage and the stage it started from share theirs)."""
    paths = tuple(dict.fromkeys(str(c["path"]) for c in corpora if c.get("path") and Path(c["path"]).is_dir()))
    if not paths:
        return {}
    if paths not in cache:
        index = BenchmarkIndex(series_of())
        for path in paths:
            try:
                index.scan(ArrowCorpus(path))
            except (DataError, OSError) as error:
                logger.warning("series-level leakage check: could not read %s (%s)", path, error)
        cache[paths] = {r.name: f"series-level check: {r.summary()}" for r in index.results if r.found}
    return cache[paths]


def model_regimes(models: Sequence[str], dataset_names: Sequence[str], datasets_root: str | Path,
                  series_of: SeriesOf | None = None) -> dict[str, dict[str, Regime]]:
    """{model: {dataset: Regime}} for the models of one evaluation; in-domain findings are logged.
    `series_of` returns {dataset: [(values, test start)]} (tsm.eval.leakage): with it, the model's corpora are
    also searched for the datasets' series."""
    fingerprints: dict[str, str | None] = {}  # benchmark datasets are hashed only if some model needs it
    scans: dict = {}
    # The benchmark's series are read once, and only if some model's corpora are on disk.
    series_of = functools.cache(series_of) if series_of else None
    regimes: dict[str, dict[str, Regime]] = {}
    for model in models:
        if model == SEASONAL_NAIVE:
            regimes[model] = {d: Regime(NOT_APPLICABLE, "a baseline: no training data") for d in dataset_names}
            continue
        provenance = read_provenance(model) if Path(model).expanduser().is_dir() else None
        if provenance is None:
            local = Path(model).expanduser().is_dir()
            regime = Regime(UNKNOWN, f"{model} has no training provenance file") if local else Regime(
                ZERO_SHOT, f"{model} is a hub model: its training data is not recorded, taken as zero-shot")
            if local:
                logger.warning("%s has no training provenance: in-domain or zero-shot is unknown", model)
            regimes[model] = dict.fromkeys(dataset_names, regime)
            continue
        corpora = training_corpora(provenance)
        if provenance.get("start_provenance") == "missing":
            logger.warning("%s started from a model without provenance: its earlier training data is unknown",
                           model)
        regimes[model] = {}
        leaked = _series_leakage(series_of, corpora, scans) if series_of else {}
        for name in dataset_names:
            if name not in fingerprints:
                fingerprints[name] = dataset_fingerprint(datasets_root, name)
            regime = match(corpora, name, fingerprints[name])
            if regime.regime == ZERO_SHOT and name in leaked:
                regime = Regime(IN_DOMAIN, leaked[name])
            regimes[model][name] = regime
            if regime.regime == IN_DOMAIN:
                logger.warning("%s on %s is in-domain, not zero-shot: %s", model, name, regime.reason)
    return regimes
