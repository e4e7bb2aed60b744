"""GIFT-Eval's protocol: configurations, horizons, windows and the test windows of each configuration.

As the benchmark's own loader (gift_eval.data.Dataset) applies it to a local copy of `Salesforce/GiftEval`:
- the horizon is a base length by frequency (M4 sets have their own) times the term's multiplier;
- M4 sets have one window; the others ceil(0.1 x the shortest series' length / horizon), clipped to [1, 20];
- the windows are the last `windows x horizon` steps of every series, non-overlapping (stride = horizon): window
  w's context is everything before it, as gluonts' `split(offset=-h*w)` + `generate_instances(h, w, distance=h)`.
The shortest length is the first variate's, for multivariate sets too (the loader reads it that way).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

TERMS: dict[str, int] = {"short": 1, "medium": 10, "long": 15}
M4_BASE_HORIZON = {"A": 6, "Q": 8, "M": 18, "W": 13, "D": 14, "H": 48}
BASE_HORIZON = {"M": 12, "W": 8, "D": 30, "H": 48, "T": 48, "S": 60}
TEST_SHARE = 0.1
MAX_WINDOWS = 20
# The leaderboard's names of four datasets (the rest are the lower-cased folder name's first part).
PRETTY_NAMES = {
    "saugeenday": "saugeen",
    "temperature_rain_with_missing": "temperature_rain",
    "kdd_cup_2018_with_missing": "kdd_cup_2018",
    "car_parts_with_missing": "car_parts",
}
# Any pandas spelling of a frequency -> the old single-letter alias the benchmark's tables use (gluonts'
# norm_freq_str, then the benchmark's maybe_reconvert_freq): "A-DEC", "YE" -> A; "W-WED" -> W; "15min" -> T.
_FREQ_ALIASES = {
    **dict.fromkeys(["A", "Y", "YE", "AS", "YS", "BA", "BY", "BYE", "BAS", "BYS"], "A"),
    **dict.fromkeys(["Q", "QE", "QS", "BQ", "BQE", "BQS"], "Q"),
    **dict.fromkeys(["M", "ME", "MS", "BM", "BME", "BMS"], "M"),
    "W": "W", "D": "D", "B": "B",
    **dict.fromkeys(["H", "h"], "H"),
    **dict.fromkeys(["T", "min"], "T"),
    **dict.fromkeys(["S", "s"], "S"),
}
_FREQ_PATTERN = re.compile(r"(?P<multiple>\d*)(?P<alias>[A-Za-z]+)(?:-[A-Za-z]+)?")


def base_freq(freq: str) -> str:
    """The benchmark's base alias of a pandas frequency string: 'A-DEC' -> 'A', '15T' -> 'T', 'W-WED' -> 'W'."""
    match = _FREQ_PATTERN.fullmatch(freq.strip())
    if match is None or match["alias"] not in _FREQ_ALIASES:
        raise ValueError(f"unknown frequency {freq!r}: expected a pandas alias such as A, Q, M, W, D, H, 15T, 10S")
    return _FREQ_ALIASES[match["alias"]]


def is_m4(name: str) -> bool:
    """The benchmark's own test: 'm4' anywhere in the dataset name."""
    return "m4" in name


def prediction_length(name: str, freq: str, term: str) -> int:
    """The horizon of dataset `name` (stored frequency `freq`) at `term`."""
    if term not in TERMS:
        raise ValueError(f"unknown term {term!r}: expected one of {list(TERMS)}")
    base = base_freq(freq)
    table = M4_BASE_HORIZON if is_m4(name) else BASE_HORIZON
    if base not in table:
        raise ValueError(f"{name}: frequency {freq!r} ({base}) has no GIFT-Eval horizon "
                         f"({'M4 sets' if is_m4(name) else 'others'}: {sorted(table)})")
    return TERMS[term] * table[base]


def num_windows(name: str, min_length: int, horizon: int) -> int:
    """How many test windows: 1 for M4 sets, else ceil(0.1 x shortest length / horizon) within [1, 20]."""
    if is_m4(name):
        return 1
    return min(max(1, math.ceil(TEST_SHARE * min_length / horizon)), MAX_WINDOWS)


def leaderboard_key(name: str) -> str:
    """The dataset part of a leaderboard row: 'saugeenday/D' -> 'saugeen', 'LOOP_SEATTLE/5T' -> 'loop_seattle'."""
    key = name.split("/")[0].lower()
    return PRETTY_NAMES.get(key, key)


# ------------------------------------------------------------------------------------------- configurations
@dataclass(frozen=True)
class Configuration:
    """One row of the leaderboard: a dataset folder at one term."""

    name: str  # the folder under the GIFT-Eval root, e.g. "electricity/15T", "m4_yearly"
    term: str

    def label(self, properties: dict) -> str:
        """The leaderboard's `dataset` column: '{key}/{freq}/{term}' (freq from the name, else the properties)."""
        key = leaderboard_key(self.name)
        freq = self.name.split("/")[1] if "/" in self.name else properties[key]["frequency"]
        return f"{key}/{freq}/{self.term}"


def reference_folder() -> Path:
    """tsm's copy of the benchmark's dataset list and properties (config/benchmarks/gift-eval/)."""
    here = Path("config/benchmarks/gift-eval")
    return here if here.is_dir() else Path(__file__).resolve().parents[3] / "config/benchmarks/gift-eval"


def load_properties(path: str | Path | None = None) -> dict:
    """dataset_properties.json: {leaderboard key: {domain, frequency, num_variates}}."""
    path = Path(path) if path else reference_folder() / "dataset_properties.json"
    return json.loads(path.read_text())


def all_configurations(datasets_yaml: str | Path | None = None) -> list[Configuration]:
    """The 97 configurations of datasets.yaml: every `short` name at short, the `med_long` ones at medium and long."""
    path = Path(datasets_yaml) if datasets_yaml else reference_folder() / "datasets.yaml"
    document = yaml.safe_load(path.read_text())
    configurations = [Configuration(name, "short") for name in document["short"]]
    for term in ("medium", "long"):
        configurations += [Configuration(name, term) for name in document["med_long"]]
    return configurations


@dataclass(frozen=True)
class BenchmarkSpec:
    """A GIFT-Eval benchmark file (config/benchmarks/gift-eval*.yaml)."""

    configurations: list[Configuration]
    properties: dict
    multivariate: str  # "joint" (all variates of an item in one Chronos-2 group) or "univariate" (one by one)


BENCHMARK_KEYS = {
    "benchmark": "gift-eval",
    "name": "a free-form name",
    "configurations": "'all' or a list of 'name' (every term the benchmark runs it at) or 'name/term'",
    "multivariate": "joint or univariate",
    "properties": "a dataset_properties.json (default: tsm's copy)",
    "datasets": "a datasets.yaml listing the short and med_long names (default: tsm's copy)",
}


def is_gift_eval_benchmark(path: str | Path) -> bool:
    """True for a YAML file whose top level says `benchmark: gift-eval`."""
    path = Path(path)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(document, dict) and document.get("benchmark") == "gift-eval"


def load_benchmark_spec(path: str | Path) -> BenchmarkSpec:
    """Read a GIFT-Eval benchmark file; a ValueError names the file and the key for anything unexpected."""
    path = Path(path)
    document = yaml.safe_load(path.read_text())
    if not isinstance(document, dict) or document.get("benchmark") != "gift-eval":
        raise ValueError(f"{path}: expected a mapping with `benchmark: gift-eval`")
    unknown = set(document) - set(BENCHMARK_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(BENCHMARK_KEYS)}")

    def relative(value: str) -> Path:  # a path in the file: as given, else beside the file
        return Path(value) if Path(value).is_absolute() or Path(value).exists() else path.parent / value

    every = all_configurations(relative(document["datasets"]) if document.get("datasets") else None)
    properties = load_properties(relative(document["properties"]) if document.get("properties") else None)
    multivariate = document.get("multivariate", "joint")
    if multivariate not in ("joint", "univariate"):
        raise ValueError(f"{path}: key 'multivariate' must be {BENCHMARK_KEYS['multivariate']}, got {multivariate!r}")
    wanted = document.get("configurations", "all")
    if wanted == "all":
        return BenchmarkSpec(every, properties, multivariate)
    if not isinstance(wanted, list) or not wanted:
        raise ValueError(f"{path}: key 'configurations' must be {BENCHMARK_KEYS['configurations']}, got {wanted!r}")
    chosen: list[Configuration] = []
    for index, entry in enumerate(wanted):
        name, _, term = str(entry).rpartition("/") if str(entry).endswith(tuple(f"/{t}" for t in TERMS)) \
            else (str(entry), "", "")
        matches = [c for c in every if c.name == name and (not term or c.term == term)]
        if not matches:
            names = sorted({c.name for c in every})
            raise ValueError(f"{path}: configurations[{index}] = {entry!r} is not a GIFT-Eval configuration "
                             f"(names: {', '.join(names)}; optionally /short, /medium or /long)")
        chosen += [c for c in matches if c not in chosen]
    return BenchmarkSpec(chosen, properties, multivariate)


# ------------------------------------------------------------------------------------------- data
@dataclass
class TestWindows:
    """Every (item, window) of one configuration. Targets are (variates, length): univariate sets have one."""

    configuration: Configuration
    freq: str
    horizon: int
    windows: int
    item_ids: list[str]
    contexts: list[np.ndarray]  # per (item, window): (variates, context length)
    labels: list[np.ndarray]  # per (item, window): (variates, horizon)

    @property
    def num_variates(self) -> int:
        return self.contexts[0].shape[0] if self.contexts else 0

    def univariate_order(self) -> np.ndarray:
        """Rows here are (item, window, variate) once flattened; the benchmark's univariate split gives (item,
        variate, window): the permutation from ours to theirs (the metrics' float32 batches follow it)."""
        items = len(self.item_ids) // self.windows if self.windows else 0
        ours = np.arange(items * self.windows * self.num_variates).reshape(items, self.windows, self.num_variates)
        return ours.transpose(0, 2, 1).ravel()


class GiftEvalDataset:
    """One folder of a local `Salesforce/GiftEval` copy, read as the benchmark's loader reads it."""

    def __init__(self, root: str | Path, name: str):
        self.root, self.name = Path(root), name
        self.folder = self.root / name
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"GIFT-Eval dataset {name} is missing: {self.folder} does not exist; fetch Salesforce/GiftEval "
                f"once with `tsm data download --gift-eval --root {self.root}` (needs network)")
        import datasets  # slow to import: only when a dataset is read

        self.table = datasets.load_from_disk(str(self.folder)).with_format("arrow")[:]
        missing = {"target", "freq"} - set(self.table.column_names)
        if missing:
            raise ValueError(f"{self.folder}: column(s) {sorted(missing)} missing; GIFT-Eval rows have item_id, "
                             "start, freq, target")
        if self.table.num_rows == 0:
            raise ValueError(f"{self.folder}: no rows")

    @cached_property
    def freq(self) -> str:
        return str(self.table.column("freq")[0].as_py())

    @cached_property
    def targets(self) -> list[np.ndarray]:
        """Every row's target as (variates, length) float64 (nulls become NaN), sliced by the Arrow offsets."""
        import pyarrow.types as pat

        rows: list[np.ndarray] = []
        for chunk in self.table.column("target").chunks:
            outer = chunk.offsets.to_numpy()
            inner_array = chunk.values
            if pat.is_list(inner_array.type) or pat.is_large_list(inner_array.type):  # multivariate: (dims, T)
                inner = inner_array.offsets.to_numpy()
                flat = inner_array.values.to_numpy(zero_copy_only=False).astype(np.float64)
                for row in range(len(chunk)):
                    first, last = outer[row], outer[row + 1]
                    lengths = np.diff(inner[first : last + 1])
                    if len(lengths) == 0 or (lengths != lengths[0]).any():
                        raise ValueError(f"{self.folder}: row {len(rows)}'s variates have lengths "
                                         f"{lengths.tolist()}; a multivariate target needs equal lengths")
                    rows.append(flat[inner[first] : inner[last]].reshape(len(lengths), lengths[0]))
            else:
                flat = inner_array.to_numpy(zero_copy_only=False).astype(np.float64)
                rows += [flat[start:end][None, :] for start, end in zip(outer[:-1], outer[1:], strict=True)]
        return rows

    @cached_property
    def item_ids(self) -> list[str]:
        if "item_id" in self.table.column_names:
            return [str(v) for v in self.table.column("item_id").to_pylist()]
        return [str(i) for i in range(self.table.num_rows)]

    @cached_property
    def min_length(self) -> int:
        return min(target.shape[1] for target in self.targets)

    def horizon(self, term: str) -> int:
        return prediction_length(self.name, self.freq, term)

    def windows(self, term: str) -> int:
        return num_windows(self.name, self.min_length, self.horizon(term))

    def test_start(self, term: str) -> int:
        """Steps before the first test window, counted from each series' end (negative)."""
        return -self.horizon(term) * self.windows(term)

    def test_windows(self, term: str) -> TestWindows:
        horizon, windows = self.horizon(term), self.windows(term)
        item_ids, contexts, labels = [], [], []
        for item_id, target in zip(self.item_ids, self.targets, strict=True):
            length = target.shape[1]
            if length - horizon * windows < 1:
                raise ValueError(f"{self.folder}: item {item_id} has {length} steps, fewer than {windows} windows "
                                 f"of {horizon} need plus one step of context")
            for window in range(windows):
                cut = length - horizon * (windows - window)
                item_ids.append(item_id)
                contexts.append(target[:, :cut])
                labels.append(target[:, cut : cut + horizon])
        return TestWindows(Configuration(self.name, term), self.freq, horizon, windows, item_ids, contexts, labels)
