"""`tsm data example-csv`: a long-format CSV of "own data" that the project generates (never fetched), for the
fine-tune-on-your-data example (config/finetune-own-data.yaml) and its tests.

Daily series of a store's `sales` (and, multivariate, its `returns`), driven by a known-future covariate
`promo` (a promotion calendar, known in advance) and a past-only covariate `footfall` (observed, not known
ahead). What a start model cannot know from the history alone: the promotions lift sales by `PROMO_LIFT`
on their days, and the weekly pattern has a period (`PERIOD`) that is not a calendar one. Columns:
item_id, timestamp, sales[, returns], promo, footfall.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tsm.atomic import write_text

PERIOD = 5  # steps per cycle of the regular pattern
PROMO_LIFT = 8.0  # sales added on a promotion day
PROMO_SHARE = 0.15  # share of days with a promotion


def example_frame(num_series: int = 40, length: int = 200, multivariate: bool = True, seed: int = 0,
                  start: str = "2024-01-01", freq: str = "D") -> pd.DataFrame:
    """The example data in long format: one row per (series, day)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(length)
    stamps = pd.date_range(start, periods=length, freq=freq)
    frames = []
    for index in range(num_series):
        level = rng.uniform(10.0, 30.0)
        amplitude = rng.uniform(1.0, 4.0)
        promo = (rng.random(length) < PROMO_SHARE).astype(np.float64)
        footfall = level * 3 + rng.normal(0.0, 2.0, length)
        sales = (level + amplitude * np.sin(2 * np.pi * steps / PERIOD + rng.uniform(0, 2 * np.pi))
                 + PROMO_LIFT * promo + rng.normal(0.0, 0.5, length))
        frame = {"item_id": f"store-{index:03d}", "timestamp": stamps, "sales": np.round(sales, 3)}
        if multivariate:  # returns follow the previous day's sales
            frame["returns"] = np.round(0.2 * np.concatenate([[sales[0]], sales[:-1]]) + rng.normal(0, 0.2, length), 3)
        frame.update(promo=promo, footfall=np.round(footfall, 3))
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def write_example_csv(output: str | Path, num_series: int = 40, length: int = 200, multivariate: bool = True,
                      seed: int = 0) -> Path:
    """Write the example CSV (atomically) and return its path."""
    frame = example_frame(num_series, length, multivariate, seed)
    return write_text(output, frame.to_csv(index=False, date_format="%Y-%m-%d"))
