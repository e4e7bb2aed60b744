"""Series-level leakage on real benchmark data: renamed, converted and truncated copies are found."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import random_walks, write_corpus
from tsm.cli import main
from tsm.data.arrow import ArrowCorpus
from tsm.data.competitions import build_competition_dataset
from tsm.eval.benchmark import benchmark_series, load_benchmark
from tsm.eval.benchmark_files import find_leakage
from tsm.eval.leakage import BenchmarkIndex, run_hashes

BENCHMARK = {"name": "two", "datasets": [
    {"name": "monash_m3_yearly", "offset": -6, "prediction_length": 6, "num_rolls": 1, "freq": "Y"},
    {"name": "monash_m3_monthly", "offset": -18, "prediction_length": 18, "num_rolls": 1, "freq": "M"},
]}


@pytest.fixture(scope="module")
def m3_benchmark(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("leak")
    for entry in BENCHMARK["datasets"]:
        build_competition_dataset(entry["name"], base / "root")
    path = base / "two.yaml"
    path.write_text(yaml.safe_dump(BENCHMARK))
    return path, base / "root"


def test_hashes_see_values_not_their_type_or_position():
    values = np.array([1.5, -0.0, 3.25, 7.0, 2.0, 8.5, 1.0, 4.0, 9.5], dtype=np.float64)
    same = run_hashes(values.astype(np.float32) + np.float32(0))  # float32 copy, +0.0 for -0.0
    assert np.array_equal(run_hashes(values), same) and len(same) == 2
    shifted = run_hashes(np.concatenate([[5.0, 6.0], values]))
    assert np.array_equal(shifted[2:], same)  # the same run anywhere in a series hashes alike
    assert run_hashes(values[::-1])[0] != same[-1]


def test_a_corpus_with_30_percent_of_a_benchmarks_series_is_found_as_30_percent(m3_benchmark, tmp_path):
    path, root = m3_benchmark
    monthly = benchmark_series(next(d for d in load_benchmark(path) if d.name == "monash_m3_monthly"), root)
    # M3 monthly holds a few duplicate series (899 and 944 are equal): a copy of one is a copy of the other. The
    # 30% are drawn among series that share no run with another, so that exactly they are expected.
    runs = [set(run_hashes(values).tolist()) for values, _ in monthly]
    owners: dict[int, int] = {}
    for hashes in runs:
        for h in hashes:
            owners[h] = owners.get(h, 0) + 1
    unique = [i for i, hashes in enumerate(runs) if all(owners[h] == 1 for h in hashes)]
    assert len(monthly) - len(unique) < 30
    rng = np.random.default_rng(0)
    chosen = np.sort(rng.choice(unique, int(0.3 * len(monthly)), replace=False))
    renamed, converted, truncated = np.array_split(chosen, 3)
    # Renamed: whole series under new ids, among unrelated series.
    walks = random_walks(500, 50, 300, seed=2)
    write_corpus(tmp_path / "renamed", [monthly[i][0].astype(np.float32) for i in renamed] + walks,
                 id=[f"x{i}" for i in range(len(renamed) + len(walks))])
    # Converted: a long CSV through `tsm data convert` (float64 values, another id column).
    rows = [{"item_id": f"s{i}", "timestamp": t, "target": float(v)}
            for i in converted for t, v in zip(pd.date_range("1990-01-01", periods=len(monthly[i][0]), freq="MS"),
                                               monthly[i][0], strict=True)]
    pd.DataFrame(rows).to_csv(tmp_path / "long.csv", index=False)
    assert main(["data", "convert", "--input", str(tmp_path / "long.csv"), "--output", str(tmp_path / "converted"),
                 "--dtype", "float64"]) == 0
    # Truncated before the test window: the history only.
    write_corpus(tmp_path / "truncated", [monthly[i][0][: monthly[i][1]] for i in truncated])

    corpora = [tmp_path / name for name in ("renamed", "converted", "truncated")]
    results = {r.name: r for r in find_leakage(path, root, corpora)}
    found = results["monash_m3_monthly"]
    # Bit for bit: exactly the copies. The transformed check adds a few M3 series that share a stretch with a
    # copied one up to scale (tests/eval/test_leakage_transformed.py).
    assert found.series == len(monthly) and found.found_exact == set(chosen.tolist())
    assert set(chosen.tolist()) <= found.found_history and len(found.transformed) <= 10
    assert found.found_test - found.transformed == set(renamed.tolist()) | set(converted.tolist())
    assert found.found - len(found.transformed) == len(chosen) and 0.29 < found.share < 0.31
    assert {corpus: len(series - found.transformed) for corpus, series in found.in_corpus.items()} == {
        "renamed": len(renamed), "converted": len(converted), "truncated": len(truncated)}
    assert "found in the training corpora" in found.describe() and f"({found.share:.1%})" in found.describe()
    assert results["monash_m3_yearly"].found == 0  # nothing of it was copied: no chance matches either


def test_synthetic_corpora_match_nothing(m3_benchmark, tmp_path):
    from tsm.data.synth import generate
    from tsm.data.synth import write_corpus as write_synth

    path, root = m3_benchmark
    write_synth(tmp_path / "synth", generate("mix", 400, 64, 512, seed=0))
    assert all(r.found == 0 for r in find_leakage(path, root, [tmp_path / "synth"]))


def test_a_test_window_copied_alone_counts_and_flat_runs_do_not():
    values = np.concatenate([np.arange(30, dtype=np.float64) * 1.7, [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]])
    flat = np.concatenate([np.zeros(20), [1.0, 2.0, 3.0, 4.0, 5.0]])  # indexed by its last runs only
    index = BenchmarkIndex({"d": [(values, 30), (flat, 16)]})
    assert index.results[0].series == 2
    corpus = np.concatenate([[0.5, 0.25], values[28:]])  # two history steps and the six test steps
    index._record(index.lookup(run_hashes(corpus)), "tail")
    index._record(index.lookup(run_hashes(np.zeros(50))), "zeros")  # a flat run is in every padded series
    assert index.results[0].found_test == {0} and index.results[0].found_history == set()
    assert index.results[0].corpora == {"tail": 1}


def test_evaluate_marks_a_dataset_whose_series_the_model_was_trained_on(m3_benchmark, tmp_path):
    from tests.conftest import tiny_config
    from tsm.eval.benchmark import evaluate
    from tsm.train.loop import train

    path, root = m3_benchmark
    monthly = benchmark_series(next(d for d in load_benchmark(path) if d.name == "monash_m3_monthly"), root)
    copies = write_corpus(tmp_path / "my_corpus", [values for values, _ in monthly[:143]])  # about 10%, renamed
    model = train(tiny_config(copies, tmp_path / "stage1", max_steps=2, save_steps=2))
    results = evaluate([str(model)], path, root, progress=False).set_index("dataset")
    assert results.loc["monash_m3_yearly", "regime"] == "zero-shot"
    row = results.loc["monash_m3_monthly"]
    assert row["regime"] == "in-domain" and row["regime_reason"].startswith("series-level check: ")
    found = int(row["regime_reason"].split("check: ")[1].split(" of ")[0])
    assert 143 <= found <= 150  # the copies, and any M3 duplicate of one of them
    assert "'my_corpus'" in row["regime_reason"]
    from tsm.eval.regime import model_regimes

    unchecked = model_regimes([str(model)], ["monash_m3_monthly"], root)  # evaluate(..., series_check=False)
    assert unchecked[str(model)]["monash_m3_monthly"].regime == "zero-shot"


def test_leakage_command_prints_and_writes_the_share_per_dataset(m3_benchmark, tmp_path, capsys):
    path, root = m3_benchmark
    yearly = benchmark_series(next(d for d in load_benchmark(path) if d.name == "monash_m3_yearly"), root)
    corpus = write_corpus(tmp_path / "c", [values for values, _ in yearly[:64]] + random_walks(50, 40, 80))
    assert main(["leakage", "--benchmark", str(path), "--datasets-root", str(root), "--corpus", str(corpus),
                 "--output", str(tmp_path / "leak.json")]) == 0
    printed = capsys.readouterr().out
    found = {r["dataset"]: r for r in json.loads((tmp_path / "leak.json").read_text())}
    expected = BenchmarkIndex({"y": yearly})
    expected.scan(ArrowCorpus(corpus))
    assert found["monash_m3_yearly"]["found"] == expected.results[0].found >= 64
    assert found["monash_m3_yearly"]["corpora"] == {"c": expected.results[0].found}
    assert found["monash_m3_yearly"]["found_exact"] == len(expected.results[0].found_exact) >= 64
    assert found["monash_m3_yearly"]["found_transformed"] == len(expected.results[0].transformed)
    assert found["monash_m3_monthly"]["found"] == 0
    assert f"monash_m3_yearly: {expected.results[0].found} of {len(yearly)} series" in printed
    assert main(["leakage", "--benchmark", str(path), "--datasets-root", str(root), "--corpus",
                 str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
