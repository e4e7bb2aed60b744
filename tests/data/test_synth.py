from __future__ import annotations

import math
from pathlib import Path

import datasets
import numpy as np
import pytest

from tsm.data import synth
from tsm.data.synth import (
    KERNEL_BANK,
    Kernel,
    corpus,
    generate,
    generate_multivariate,
    kernel_matrix,
    sample_expression,
    write_corpus,
    write_multivariate_corpus,
)

datasets.disable_progress_bars()


def bank(kind: str, param: float = 0.0) -> Kernel:
    return next(k for k in KERNEL_BANK if k.kind == kind and k.param == param)


@pytest.mark.parametrize("kind", ["kernelsynth", "simple", "mix"])
def test_shapes_lengths_dtype_and_finite(kind: str) -> None:
    series = generate(kind, 60, 16, 300, seed=3)
    assert len(series) == 60
    for values in series:
        assert values.dtype == np.float32 and values.ndim == 1
        assert 16 <= len(values) <= 300
        assert np.isfinite(values).all()
    assert len({len(s) for s in series}) > 10  # lengths really vary
    if kind == "simple":  # (KernelSynth keeps the paper's rare flat draws: a lone constant kernel)
        assert all(np.ptp(s) > 0 for s in generate(kind, 300, 16, 32, seed=3))


def test_deterministic_for_a_seed() -> None:
    first, again = generate("mix", 30, 32, 96, seed=7), generate("mix", 30, 32, 96, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = generate("mix", 30, 32, 96, seed=8)
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_golden_lengths() -> None:
    # The lengths come from integer draws of each series' own generator, so they are exact on any machine.
    # Obtained once with: [len(s) for s in generate("mix", 8, 20, 500, seed=0)].
    assert [len(s) for s in generate("mix", 8, 20, 500, seed=0)] == [271, 485, 287, 135, 113, 257, 204, 499]


def test_two_workers_give_the_same_series(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "_CHUNK_SIZE", 16)  # the parent cuts the chunks: 100 series = 7 tasks
    one = generate("mix", 100, 24, 96, seed=11)
    two = generate("mix", 100, 24, 96, seed=11, num_workers=2)
    assert len(one) == len(two) == 100
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))


def test_the_mix_is_one_to_one_kernelsynth_and_simple() -> None:
    mix = generate("mix", 10, 32, 64, seed=5)
    kernel, simple = generate("kernelsynth", 10, 32, 64, seed=5), generate("simple", 10, 32, 64, seed=5)
    for i, values in enumerate(mix):
        assert np.array_equal(values, (kernel if i % 2 == 0 else simple)[i])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="allowed: kernelsynth, simple, mix"):
        generate("gp", 1, 10, 20, 0)
    with pytest.raises(ValueError, match="min_length"):
        generate("mix", 1, 30, 20, 0)


# ---- exactness of the fast KernelSynth sampler -------------------------------------------------------

SMOOTH = [k for k in KERNEL_BANK if k.kind in ("rbf", "rq", "dot", "constant")]


@pytest.mark.parametrize("length", [17, 1024])
def test_smooth_features_reproduce_the_kernel_matrix(length: int) -> None:
    products = [(k,) for k in SMOOTH]
    products += [(bank("rbf", 0.1),) * 5, (bank("rq", 0.1),) * 3 + (bank("dot", 10.0),)]
    for product in products:
        features = synth._smooth_features(tuple(sorted(product)), length)
        exact = kernel_matrix([product], length)
        error = np.abs(features @ features.T - exact).max() / np.abs(exact).max()
        assert error < 1e-11, (product, error)


def test_periodic_products_are_exact_circulants_and_fourier_series() -> None:
    lag = np.arange(400, dtype=np.float64)
    for periods in [(24.0,), (7.0, 365.0), (4.0, 6.0, 12.0)]:
        exact = np.prod([np.exp(-2 * np.sin(np.pi * lag / p) ** 2) for p in periods], axis=0)
        cycle = math.lcm(*map(int, periods))
        first_row = np.fft.ifft(synth._circulant_sqrt_eigenvalues(periods) ** 2 * cycle).real
        assert np.abs(first_row[lag.astype(int) % cycle] - exact).max() < 1e-12
    frequencies, weights = synth._product_spectrum((365.0, 672.0))
    exact = np.exp(-2 * np.sin(np.pi * lag / 365) ** 2 - 2 * np.sin(np.pi * lag / 672) ** 2)
    assert np.abs(np.cos(np.outer(lag, frequencies)) @ weights - exact).max() < 1e-10


EXPRESSIONS = {
    "periodic x rbf": [(bank("periodic", 24), bank("rbf", 0.1))],
    "two periods, fft": [(bank("periodic", 7), bank("periodic", 365), bank("dot", 1.0))],
    "two periods, fourier": [(bank("periodic", 365), bank("periodic", 672))],
    "three periods, cholesky": [(bank("periodic", 7), bank("periodic", 26), bank("periodic", 365))],
    "sum with white": [(bank("rq", 0.1), bank("dot", 10.0)), (bank("white", 0.1), bank("dot", 1.0))],
    "periodic x smooth + constant": [(bank("periodic", 4), bank("rbf", 1.0)), (bank("constant"),)],
}


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_sample_covariance_matches_the_kernel(name: str) -> None:
    monomials, length, draws = EXPRESSIONS[name], 24, 4000
    rng = np.random.default_rng(0)
    samples = np.stack([sample_expression(monomials, length, rng) for _ in range(draws)])
    exact = kernel_matrix(monomials, length)
    scale = np.sqrt(np.outer(np.diag(exact), np.diag(exact)))
    # Sampling error of a covariance estimate is ~sqrt(2 / draws) of the scale; 0.1 is ~4 sigma.
    assert np.abs(samples.T @ samples / draws - exact).max() / scale.max() < 0.1


def test_kernel_expressions_follow_the_paper() -> None:
    rng = np.random.default_rng(0)
    expressions = [synth.draw_kernel_expression(rng) for _ in range(500)]
    # Up to 5 kernels joined by + or *: at most 5 monomials of at most 5 factors; both operators occur.
    assert all(len(e) <= 5 and all(1 <= len(m) <= 5 for m in e) for e in expressions)
    assert any(len(e) > 1 for e in expressions) and any(len(m) > 1 for e in expressions for m in e)
    assert len([k for k in KERNEL_BANK if k.kind == "periodic"]) == 21 and len(KERNEL_BANK) == 33


# ---- writing ---------------------------------------------------------------------------------------------


def test_write_corpus_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    path = tmp_path / "corpus"
    series = generate("mix", 12, 20, 40, seed=1)
    assert write_corpus(path, series) == 12
    ds = datasets.load_from_disk(str(path))
    assert ds.column_names == ["id", "timestamp", "target"]
    assert ds.features["target"].feature.dtype == "float32"
    for row, values in zip(ds, series, strict=True):
        np.testing.assert_array_equal(np.asarray(row["target"], dtype=np.float32), values)
        stamps = np.array(row["timestamp"], dtype="datetime64[h]")
        assert str(stamps[0]) == "2000-01-01T00" and (np.diff(stamps).astype(int) == 1).all()
    assert write_corpus(path, series[:3], freq="D") == 3  # replaces the old corpus as a whole
    assert len(datasets.load_from_disk(str(path))) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]


def test_write_corpus_rejects_2d_series_and_empty_corpora(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="series 1 has shape"):
        write_corpus(tmp_path / "c", [np.zeros(5), np.zeros((2, 5))])
    with pytest.raises(ValueError, match="no series to write"):
        write_corpus(tmp_path / "c", [])
    assert not any(tmp_path.iterdir())


# ---- multivariate groups ---------------------------------------------------------------------------------


def _explained_variance(target: np.ndarray, covariates: np.ndarray) -> float:
    """Mean R^2 of each variate regressed on the covariates at lags 0..3 (least squares)."""
    length = min(target.shape[1], covariates.shape[1])
    columns = [np.ones(length - 3)] + [c[3 - lag: length - lag] for c in covariates for lag in range(4)]
    design = np.array(columns).T
    scores = []
    for y in target[:, 3:length]:
        beta, *_ = np.linalg.lstsq(design, y, rcond=None)
        scores.append(1.0 - np.var(y - design @ beta) / np.var(y))
    return float(np.mean(scores))


def test_multivariate_groups_shapes_and_dependence() -> None:
    items = generate_multivariate(40, 100, 200, seed=2, covariates=True)
    for item in items:
        target, covariates = item["target"], item["feat_dynamic_real"]
        assert target.dtype == covariates.dtype == np.float32
        assert 2 <= target.shape[0] <= 5 and 100 <= target.shape[1] <= 200
        assert 1 <= covariates.shape[0] <= 2 and covariates.shape[1] == target.shape[1]
        assert np.isfinite(target).all() and np.isfinite(covariates).all()
    # Variates share sources: they are correlated far more than independent series would be.
    pairs = [np.corrcoef(i["target"])[np.triu_indices(len(i["target"]), 1)] for i in items]
    assert np.mean([np.abs(p).mean() for p in pairs]) > 0.25
    # Covariates drive the targets: they explain much more of their own item than of another item.
    own = np.mean([_explained_variance(i["target"], i["feat_dynamic_real"]) for i in items])
    other = np.mean([_explained_variance(i["target"], items[k - 1]["feat_dynamic_real"])
                     for k, i in enumerate(items)])
    assert own > other + 0.15
    assert "feat_dynamic_real" not in generate_multivariate(3, 20, 30, seed=2)[0]


def test_multivariate_is_deterministic_across_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "_CHUNK_SIZE", 8)
    one = generate_multivariate(30, 20, 60, seed=4, covariates=True)
    two = generate_multivariate(30, 20, 60, seed=4, covariates=True, num_workers=2)
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_write_multivariate_corpus_round_trip(tmp_path: Path) -> None:
    items = generate_multivariate(6, 20, 40, seed=0, covariates=True)
    assert write_multivariate_corpus(tmp_path / "mv", items) == 6
    ds = datasets.load_from_disk(str(tmp_path / "mv"))
    assert ds.column_names == ["id", "timestamp", "target", "feat_dynamic_real"]
    for row, item in zip(ds, items, strict=True):
        np.testing.assert_array_equal(np.array(row["target"], dtype=np.float32), item["target"])
        covariates = np.array(row["feat_dynamic_real"], dtype=np.float32)
        np.testing.assert_array_equal(covariates, item["feat_dynamic_real"])
        assert len(row["timestamp"]) == item["target"].shape[1]
    bad = [{"target": np.zeros((2, 5)), "feat_dynamic_real": np.zeros((1, 4))}]
    with pytest.raises(ValueError, match="item 0: feat_dynamic_real has shape"):
        write_multivariate_corpus(tmp_path / "bad", bad)
