from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import random_walks, write_corpus
from tsm.cli import main as tsm_main
from tsm.data.arrow import ArrowCorpus, DataError
from tsm.data.tsmixup import MixupSettings, _Sources, mix_one, tsmixup


@pytest.fixture
def two_corpora(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    small = write_corpus(tmp_path / "small", [rng.gamma(2.0, 50.0, int(n)).astype("float32")
                                              for n in rng.integers(150, 300, 10)])
    large = write_corpus(tmp_path / "large", random_walks(400, 100, 600, seed=1))
    return [small, large]


def test_each_series_is_the_dirichlet_weighted_sum_of_mean_scaled_windows(two_corpora: list[Path]) -> None:
    settings = MixupSettings(num_series=200, min_length=64, max_length=256, seed=3)
    sources = _Sources(two_corpora, settings.min_length)
    for index in range(settings.num_series):
        mixed = mix_one(sources, settings, index)
        assert 1 <= len(mixed.weights) <= 3 and len(mixed.sources) == len(mixed.weights)
        assert mixed.weights.sum() == pytest.approx(1.0) and (mixed.weights > 0).all()
        length = len(mixed.values)
        expected = np.zeros(length)
        shortest = settings.max_length
        for (corpus, row, variate, start), weight in zip(mixed.sources, mixed.weights, strict=True):
            values = ArrowCorpus(two_corpora[corpus]).target.row(row)[variate].astype(np.float64)
            shortest = min(shortest, len(values))
            window = values[start : start + length]
            assert len(window) == length  # the window lies inside its source
            expected += weight * window / np.abs(window).mean()
        assert settings.min_length <= length <= shortest
        np.testing.assert_allclose(mixed.values, expected.astype(np.float32), rtol=1e-6)


def test_components_weights_corpora_and_lengths_are_drawn_as_the_paper_says(two_corpora: list[Path]) -> None:
    settings = MixupSettings(num_series=3000, min_length=64, max_length=128, alpha=1.5, seed=0)
    sources = _Sources(two_corpora, settings.min_length)
    mixes = [mix_one(sources, settings, i) for i in range(settings.num_series)]
    counts = Counter(len(m.weights) for m in mixes)
    assert set(counts) == {1, 2, 3} and all(900 < c < 1100 for c in counts.values())  # k uniform in 1..3
    # Corpus drawn uniformly, not by size: the 10-series corpus gives half the components.
    components = [c for m in mixes for c, *_ in m.sources]
    assert 0.45 < components.count(0) / len(components) < 0.55
    # Dirichlet(1.5, 1.5): each weight has mean 1/2 and variance 1/16 (a / a0 (1 - a / a0) / (a0 + 1)).
    pairs = np.array([m.weights for m in mixes if len(m.weights) == 2])
    assert pairs[:, 0].mean() == pytest.approx(0.5, abs=0.02)
    assert pairs[:, 0].var() == pytest.approx(1 / 16, abs=0.01)
    lengths = np.array([len(m.values) for m in mixes])  # sources here are all longer than max_length
    assert lengths.min() == 64 and lengths.max() == 128 and abs(lengths.mean() - 96) < 2


def test_mixing_ignores_the_scale_of_the_sources(tmp_path: Path, two_corpora: list[Path]) -> None:
    scaled = write_corpus(tmp_path / "scaled", [ArrowCorpus(two_corpora[1]).target.row(i)[0] * 1000.0
                                                for i in range(400)])
    settings = MixupSettings(num_series=50, min_length=64, max_length=256)
    np.testing.assert_allclose(np.concatenate(tsmixup([two_corpora[0], scaled], settings)),
                               np.concatenate(tsmixup(two_corpora, settings)), rtol=1e-4)


def test_the_same_seed_gives_the_same_corpus_with_any_number_of_workers(two_corpora: list[Path]) -> None:
    settings = MixupSettings(num_series=1100, min_length=64, max_length=256, seed=7)  # 3 chunks
    one = tsmixup(two_corpora, settings)
    two = tsmixup(two_corpora, settings, num_workers=2)
    assert len(one) == len(two) == 1100
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))
    other = tsmixup(two_corpora, MixupSettings(num_series=1100, min_length=64, max_length=256, seed=8))
    assert not np.array_equal(np.concatenate(one[:10]), np.concatenate(other[:10]))


def test_multivariate_rows_give_one_variate_and_missing_values_stay_missing(tmp_path: Path) -> None:
    rows = [[np.arange(1, 101, dtype=np.float32), -np.arange(1, 101, dtype=np.float32)] for _ in range(5)]
    path = write_corpus(tmp_path / "mv", rows)
    gappy = np.arange(1, 101, dtype=np.float32)
    gappy[50] = np.nan
    with_gap = write_corpus(tmp_path / "gap", [gappy])
    settings = MixupSettings(num_series=40, max_components=1, min_length=100, max_length=100)
    for values in tsmixup([path], settings):  # one whole variate, mean-scaled: +-arange / 50.5
        assert np.allclose(np.abs(values), np.arange(1, 101) / 50.5)
    values = tsmixup([with_gap], settings)[0]
    assert np.isnan(values[50]) and np.isfinite(np.delete(values, 50)).all()


def test_bad_input_names_the_corpus_and_what_was_expected(tmp_path: Path, two_corpora: list[Path]) -> None:
    short = write_corpus(tmp_path / "short", random_walks(5, 20, 40))
    with pytest.raises(DataError, match=r"short: no series has the 64 steps of --min-length \(longest: \d+\)"):
        tsmixup([two_corpora[0], short], MixupSettings(num_series=5, min_length=64))
    with pytest.raises(DataError, match="does not exist"):
        tsmixup([tmp_path / "missing"], MixupSettings(num_series=5))
    with pytest.raises(DataError, match="--max-components must be >= 1"):
        tsmixup(two_corpora, MixupSettings(num_series=5, max_components=0))
    with pytest.raises(DataError, match="--min-length <= --max-length"):
        tsmixup(two_corpora, MixupSettings(num_series=5, min_length=300, max_length=200))


def test_command_writes_a_corpus_that_training_reads(tmp_path: Path, two_corpora: list[Path], capsys) -> None:
    # The command's main() in this process: the same parser and handling, without an interpreter start.
    out = tmp_path / "mixed"
    assert tsm_main(["data", "tsmixup", "--input", *map(str, two_corpora), "--output", str(out), "--num-series",
                     "300", "--min-length", "64", "--max-length", "200"]) == 0
    result = capsys.readouterr()
    assert "tsmixup: 100%" in result.err  # the progress bar
    corpus = ArrowCorpus(out)
    assert len(corpus) == 300 and 64 <= corpus.lengths.min() and corpus.lengths.max() <= 200
    assert (f"wrote 300 TSMixup series (lengths {corpus.lengths.min()}-{corpus.lengths.max()}, mean "
            f"{int(corpus.lengths.mean())}) from 2 corpora") in result.out
    expected = tsmixup(two_corpora, MixupSettings(num_series=300, min_length=64, max_length=200))
    assert all(np.array_equal(corpus.target.row(i)[0], expected[i]) for i in range(300))
    assert tsm_main(["data", "tsmixup", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "x"),
                     "--num-series", "3"]) != 0
    assert "nope does not exist" in capsys.readouterr().err  # a message; a traceback would fail this test
