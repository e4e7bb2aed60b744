"""A small synthetic GIFT-Eval root, laid out as the hub's `Salesforce/GiftEval` (a `save_to_disk` folder per name,
rows with item_id, start, freq, target): what the tests and the workflow's offline run score, since the hub
cannot be reached there. The names are real GIFT-Eval names, so horizons, windows, the M4 rule and the
leaderboard labels are the benchmark's; the values are not its data (the seasonal naive check will disagree).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

# name -> (freq, variates, shortest length, longest length, share of NaN values)
SYNTHETIC_SETS: dict[str, tuple[str, int, int, int, float]] = {
    "m4_yearly": ("A-DEC", 1, 19, 45, 0.0),  # an M4 set: one window, its own horizon (6)
    "hospital": ("M", 1, 60, 84, 0.0),  # a name without a frequency part: the label's freq from the properties
    "kdd_cup_2018_with_missing/D": ("D", 1, 250, 420, 0.05),  # missing values in contexts and labels
    "ett2/D": ("D", 3, 400, 400, 0.0),  # multivariate: 3 variates of equal length
}


def _series(rng: np.random.Generator, length: int, period: int, nan_share: float) -> np.ndarray:
    steps = np.arange(length)
    values = (10 + 0.02 * steps + 3 * np.sin(2 * np.pi * steps / period) + rng.normal(0, 1, length).cumsum() * 0.3
              + rng.normal(0, 0.5, length))
    if nan_share:
        values[rng.random(length) < nan_share] = np.nan
    return values.astype(np.float32)


def write_synthetic_gift_eval(root: str | Path, names: list[str] | None = None, seed: int = 0,
                              series_per_set: int = 6) -> list[str]:
    """Write the synthetic sets (all of SYNTHETIC_SETS, or `names`) under `root`; returns the names written."""
    import datasets

    rng = np.random.default_rng(seed)
    written = []
    for name in names or list(SYNTHETIC_SETS):
        freq, variates, shortest, longest, nan_share = SYNTHETIC_SETS[name]
        period = {"M": 12, "D": 7}.get(freq[0], 4)
        lengths = np.linspace(shortest, longest, series_per_set).astype(int)
        rows = {"item_id": [], "start": [], "freq": [], "target": []}
        for index, length in enumerate(lengths):
            target = [_series(rng, int(length), period, nan_share) for _ in range(variates)]
            rows["item_id"].append(f"{name.split('/')[0]}_{index}")
            rows["start"].append(datetime(2000, 1, 1))
            rows["freq"].append(freq)
            rows["target"].append(target[0] if variates == 1 else np.stack(target))
        features = datasets.Features({
            "item_id": datasets.Value("string"), "start": datasets.Value("timestamp[s]"),
            "freq": datasets.Value("string"),
            "target": datasets.Sequence(datasets.Value("float32")) if variates == 1
            else datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
        })
        datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(Path(root) / name))
        written.append(name)
    return written
