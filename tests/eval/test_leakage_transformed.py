"""Transformed copies of a benchmark's series (scaled, shifted, half precision, cut) are found and reported apart
from exact ones; unrelated series (KernelSynth, random walks, lines, constants) are not flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import random_walks, write_corpus
from tsm.data.arrow import ArrowCorpus
from tsm.data.competitions import load_competition_series
from tsm.eval import affine_leakage as shapes
from tsm.eval.leakage import BenchmarkIndex

M3_MONTHLY_HORIZON = 18


def bfloat16(values: np.ndarray) -> np.ndarray:
    """Round to bfloat16 (round to nearest even) and back to float32, as a bf16 training pipeline stores values."""
    bits = np.asarray(values, np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


def mean_scaled(values: np.ndarray) -> np.ndarray:
    return values / np.abs(values).mean()  # Chronos' and TSMixup's scaling


TRANSFORMS = {
    "float32": lambda v, test: v.astype(np.float32),
    "mean-scaled": lambda v, test: mean_scaled(v).astype(np.float32),
    "z-normalised": lambda v, test: ((v - v.mean()) / v.std()).astype(np.float32),
    "mean-scaled, cut before the test window": lambda v, test: mean_scaled(v[:test]).astype(np.float32),
    "mean-scaled, bfloat16": lambda v, test: bfloat16(mean_scaled(v)),
}


@pytest.fixture(scope="module")
def m3_monthly() -> list[tuple[np.ndarray, int]]:
    return [(values, len(values) - M3_MONTHLY_HORIZON) for values in load_competition_series("monash_m3_monthly")[1]]


@pytest.fixture(scope="module")
def index(m3_monthly) -> BenchmarkIndex:
    return BenchmarkIndex({"monash_m3_monthly": m3_monthly})


# The figures, in the default run: ~4 s (the M3 monthly index, shared with the next test, ~2.5 s more)
def test_every_transformed_copy_is_found_at_the_planted_share_and_exact_ones_apart(m3_monthly, index, tmp_path):
    """30% of M3 monthly planted per transform, each in a corpus of its own among random walks. The float32
    copies are drawn apart from the transformed ones, so that the exact and transformed counts can be told."""
    index.clear_findings()
    rng = np.random.default_rng(0)
    planted_count = int(0.3 * len(m3_monthly))
    exact = rng.choice(len(m3_monthly), planted_count, replace=False)
    others = np.setdiff1d(np.arange(len(m3_monthly)), exact)
    planted = {}
    for name, transform in TRANSFORMS.items():
        chosen = exact if name == "float32" else rng.choice(others, planted_count, replace=False)
        planted[name] = set(chosen.tolist())
        copies = [transform(m3_monthly[i][0].astype(np.float64), m3_monthly[i][1]) for i in chosen]
        path = write_corpus(tmp_path / name.replace(" ", "_"), copies + random_walks(100, 50, 300, seed=len(name)))
        index.scan(ArrowCorpus(path), name=name)
    found = index.results[0]
    for name, series in planted.items():
        share = len(found.in_corpus[name]) / len(m3_monthly)
        assert abs(share - 0.3) <= 0.01, (name, share)
        # Recall on the planted series themselves (the rest of the share: M3 series that share a stretch with a
        # planted one, e.g. its exact duplicates): all of them but for bfloat16, where rounding hides the detail
        # of a few smooth series.
        recall = len(found.in_corpus[name] & series) / len(series)
        assert recall >= (0.95 if "bfloat16" in name else 1.0), (name, recall)
    transformed = set().union(*(s for name, s in planted.items() if name != "float32"))
    # Exact: the float32 copies, and the transformed-planted series that M3 holds twice (one copy of a pair
    # planted as float32 finds the other bit for bit).
    assert planted["float32"] <= found.found_exact and len(transformed & found.found_exact) <= 10
    assert abs(len(found.found_exact) / len(m3_monthly) - 0.3) <= 0.01
    assert len(found.transformed & transformed) >= 0.95 * len(transformed)
    # Cut before the test window: the history only (but for the odd M3 series that shares a stretch with one
    # planted whole elsewhere).
    only_cut = planted["mean-scaled, cut before the test window"] - set().union(
        *(s for name, s in planted.items() if "cut" not in name))
    assert len(only_cut) > 30 and len(only_cut & found.found_test) <= 3 and len(only_cut - found.found_history) <= 0
    summary = found.summary()
    assert f"{len(found.found_exact):,} exact copies, {len(found.transformed):,} transformed" in summary
    assert "rounded to half precision" in summary


def test_unrelated_series_are_not_flagged(index, tmp_path):
    from tsm.data.synth import generate

    index.clear_findings()
    rng = np.random.default_rng(1)
    kernelsynth = generate("kernelsynth", 300, 64, 512, seed=0)
    walks = random_walks(300, 50, 500, seed=3)
    lines = [np.linspace(rng.normal() * 100, rng.normal() * 100, int(rng.integers(40, 300))) for _ in range(100)]
    constants = [np.full(int(rng.integers(40, 200)), rng.normal() * 100) for _ in range(50)]
    steps = [np.repeat(rng.normal(size=8) * 50, 12) for _ in range(50)]  # piecewise constant
    path = write_corpus(tmp_path / "unrelated", [np.asarray(s, np.float32) for s in
                                                 kernelsynth + walks + lines + constants + steps])
    index.scan(ArrowCorpus(path))
    assert index.results[0].found == 0


# ~3.5 s: M3 quarterly and monthly indexed, M1 scanned
def test_the_m1_series_inside_m3_are_found_scaled():
    """M3 reused M1 series scaled by 1,000: a model trained on M1 has seen part of M3's test windows. By their
    last 16 points (as float32 ratios), 40 of 756 M3 quarterly and 95 of 1,428 M3 monthly series are M1 series;
    the check finds all of them, and one more M3 quarterly series (an M1 series holds its history)."""
    benchmark = {name: [(v, len(v) - horizon) for v in load_competition_series(name)[1]]
                 for name, horizon in (("monash_m3_quarterly", 8), ("monash_m3_monthly", 18))}
    index = BenchmarkIndex(benchmark)
    for name in ("monash_m1_quarterly", "monash_m1_monthly"):
        index.scan_series(load_competition_series(name)[1], name)
    quarterly, monthly = index.results
    by_last_16 = {}
    for (name, series), m1 in zip(benchmark.items(), ("monash_m1_quarterly", "monash_m1_monthly"), strict=True):
        ratios = {tuple(np.round(v[-16:] / np.abs(v[-16:]).max(), 5)) for v in load_competition_series(m1)[1]}
        by_last_16[name] = {i for i, (v, _) in enumerate(series)
                            if tuple(np.round(v[-16:] / np.abs(v[-16:]).max(), 5)) in ratios}
    assert len(by_last_16["monash_m3_quarterly"]) == 40 and len(by_last_16["monash_m3_monthly"]) == 95
    assert by_last_16["monash_m3_quarterly"] <= quarterly.found_test
    assert by_last_16["monash_m3_monthly"] <= monthly.found_test
    assert (quarterly.found, monthly.found) == (41, 95)
    assert len(quarterly.transformed) == 41 and quarterly.corpora == {"monash_m1_quarterly": 41}
    assert monthly.corpora == {"monash_m1_monthly": 95} and len(monthly.transformed) >= 90


def test_shape_keys_survive_rounding_and_affine_maps():
    rng = np.random.default_rng(0)
    values = 5000 + np.cumsum(rng.normal(0, 80, 60))
    keys, starts = shapes.series_keys(values)
    for copy in (values * 1000, values / np.abs(values).mean() - 3):
        assert np.isin(shapes.corpus_keys(copy), keys).all()  # every run meets one of its keys
    rounded = shapes.corpus_keys(bfloat16(values / np.abs(values).mean()))
    assert np.isin(rounded, keys).any()  # rounding moves some runs' keys past their variants, not all
    assert (shapes.corpus_keys(np.full(40, 3.0)) == -1).all()  # a flat run has no shape
    assert shapes.corpus_keys(np.r_[values[:20], np.nan, values[20:]])[5:21].tolist() == [-1] * 16


def test_a_line_verifies_but_holds_no_detail():
    line = np.linspace(10.0, 50.0, 40)
    copy = 3 * np.linspace(-2.0, 7.0, 40) + 1  # another straight line: an affine image of every line
    assert shapes.verify_stretch(line, copy, 0, 0) is None
    rng = np.random.default_rng(2)
    rough = 100 + np.cumsum(rng.normal(0, 5, size=40))
    stretch = shapes.verify_stretch(rough, 2.5 * rough[5:] - 7, 5, 3)  # a copy cut 5 values in
    assert stretch == shapes.Stretch(5, 40, shapes.EXACT)
    stretch = shapes.verify_stretch(rough, bfloat16(rough / rough.mean()), 0, 0)
    assert stretch == shapes.Stretch(0, 40, shapes.HALF)


def test_the_findings_report_exact_and_transformed_apart():
    """What `tsm leakage --output` writes per dataset (DatasetLeakage.as_json; the command itself:
    tests/eval/test_leakage.py)."""
    series = load_competition_series("monash_m1_quarterly")[1]
    index = BenchmarkIndex({"monash_m1_quarterly": [(v, len(v) - 8) for v in series]})
    index.scan_series([v.astype(np.float32) for v in series[:10]]
                      + [mean_scaled(v.astype(np.float64)).astype(np.float32) for v in series[10:30]], "c")
    found = index.results[0]
    row = json.loads(json.dumps(found.as_json()))
    assert set(range(10)) <= found.found_exact and set(range(10, 30)) <= found.transformed
    assert row["found"] == row["found_exact"] + row["found_transformed"] == found.found >= 30
    assert (row["found_exact"], row["found_transformed"]) == (len(found.found_exact), len(found.transformed))
    assert row["share_transformed"] == pytest.approx(row["found_transformed"] / len(series))
    assert row["share"] == pytest.approx(row["found"] / len(series)) and row["corpora"] == {"c": found.found}
