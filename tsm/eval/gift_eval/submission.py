"""The leaderboard's submission folder: `all_results.csv` (one row per configuration, the 15 published columns in
the published order) and `config.json` (model_type, testdata_leakage, replication_code_available, ...).

`model_type` comes from the model's training provenance and the series-level leakage check against GIFT-Eval's
own series (tsm.eval.leakage):
- `fine-tuned`: the model was trained on GIFT-Eval data (a corpus with a GIFT-Eval dataset's name or content, or
  corpora holding GIFT-Eval series before their test windows): allowed, but not zero-shot;
- `zero-shot`: every training corpus is recorded and none holds any GIFT-Eval series;
- `pretrained`: a foundation model whose training data tsm cannot check (a hub model, a folder without
  provenance, corpora no longer on disk).
`testdata_leakage` is Yes when a corpus holds values of a test window, No when the check ran and found none, and
Unknown when it could not run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tsm.eval.gift_eval.metrics import METRIC_COLUMNS
from tsm.eval.gift_eval.protocol import Configuration, GiftEvalDataset
from tsm.eval.leakage import BenchmarkIndex

RESULT_COLUMNS = ["dataset", "model", *METRIC_COLUMNS, "domain", "num_variates"]
FINE_TUNED, ZERO_SHOT, PRETRAINED = "fine-tuned", "zero-shot", "pretrained"


@dataclass
class LeakageVerdict:
    """What the provenance and the series-level check say about one model's training data."""

    model_type: str
    testdata_leakage: str  # Yes / No / Unknown
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"model_type": self.model_type, "testdata_leakage": self.testdata_leakage, "reasons": self.reasons}


def gift_eval_series(configurations: Sequence[Configuration], root: str | Path,
                     labels: dict[Configuration, str]) -> dict[str, list[tuple[np.ndarray, int]]]:
    """{dataset: [(one variate's values, test start)]}: what the leakage index takes. Each variate is a series of
    its own (a corpus may hold it alone); a dataset run at several terms is indexed once, its test region from
    the earliest test window of any term (labelled by its configurations, '/'-joined terms)."""
    by_name: dict[str, list[Configuration]] = {}
    for configuration in configurations:
        by_name.setdefault(configuration.name, []).append(configuration)
    series: dict[str, list[tuple[np.ndarray, int]]] = {}
    for name, runs in by_name.items():
        dataset = GiftEvalDataset(root, name)
        offset = min(dataset.test_start(c.term) for c in runs)  # negative: the longest test region
        label = labels[runs[0]].rsplit("/", 1)[0] + "/" + "+".join(c.term for c in runs)
        series[label] = [(variate, max(target.shape[1] + offset, 0)) for target in dataset.targets
                         for variate in target]
    return series


def leakage_verdict(model: str, configurations: Sequence[Configuration], root: str | Path,
                    labels: dict[Configuration, str]) -> LeakageVerdict:
    """The submission's model_type and testdata_leakage for one model (see the module docstring)."""
    from tsm.data.arrow import ArrowCorpus, DataError
    from tsm.provenance import read_provenance, training_corpora

    folder = Path(model).expanduser()
    provenance = read_provenance(folder) if folder.is_dir() else None
    if provenance is None:
        why = "a hub model" if not folder.is_dir() else "no training-provenance.json"
        return LeakageVerdict(PRETRAINED, "Unknown", [f"{model}: {why}; its training data cannot be checked"])
    corpora = training_corpora(provenance)
    names = {c.name for c in configurations} | {c.name.split("/")[0] for c in configurations}
    reasons = [f"training corpus '{c.get('name')}' ({c.get('path')}) is named like a GIFT-Eval dataset"
               for c in corpora if c.get("name") in names]
    on_disk = [c for c in corpora if c.get("path") and Path(c["path"]).is_dir()]
    gone = [c for c in corpora if c not in on_disk]
    index = BenchmarkIndex(gift_eval_series(configurations, root, labels))
    for corpus in on_disk:
        try:
            index.scan(ArrowCorpus(corpus["path"]), name=str(corpus.get("name")))
        except (DataError, OSError) as error:
            gone.append(corpus)
            reasons.append(f"could not read corpus {corpus['path']}: {error}")
    leaked = [r for r in index.results if r.found_test]
    history = [r for r in index.results if r.found_history and not r.found_test]
    reasons += [f"{r.name}: {r.summary()}" for r in leaked + history]
    if gone:
        reasons.append(f"{len(gone)} training corpus/corpora not on disk: not searched "
                       f"({', '.join(str(c.get('path')) for c in gone)})")
    testdata = "Yes" if leaked else ("Unknown" if gone else "No")
    if leaked or history or any("named like" in r for r in reasons):
        model_type = FINE_TUNED
    else:
        model_type = PRETRAINED if gone else ZERO_SHOT
    return LeakageVerdict(model_type, testdata, reasons)


def submission_config(model_name: str, verdict: LeakageVerdict, model_link: str = "", code_link: str = "",
                      org: str = "", dtype: str = "float32") -> dict:
    """config.json as the published submissions write it."""
    return {
        "model": model_name,
        "model_type": verdict.model_type,
        "model_dtype": dtype,
        "model_link": model_link,
        "code_link": code_link,
        "org": org,
        "testdata_leakage": verdict.testdata_leakage,
        "replication_code_available": "Yes",  # tsm's config and this command reproduce it
    }


def write_submission(folder: str | Path, rows: pd.DataFrame, config: dict, details: dict | None = None) -> Path:
    """`folder`/all_results.csv (the 15 columns, one row per configuration) and config.json; `details` (how
    multivariate sets were forecast, the leakage findings) go to tsm-details.json beside them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if rows["dataset"].duplicated().any():
        repeated = sorted(set(rows.loc[rows["dataset"].duplicated(), "dataset"]))
        raise ValueError(f"a submission holds one row per configuration; repeated: {repeated}")
    rows[RESULT_COLUMNS].to_csv(folder / "all_results.csv", index=False)
    (folder / "config.json").write_text(json.dumps(config, indent=4) + "\n")
    if details is not None:
        (folder / "tsm-details.json").write_text(json.dumps(details, indent=2) + "\n")
    return folder
