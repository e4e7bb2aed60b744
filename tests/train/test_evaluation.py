"""Benchmark evaluation during training: scores logged, top-K checkpoints kept through rotation."""

import json
import math

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import tiny_config
from tsm.config import ConfigError
from tsm.data.competitions import build_competition_dataset
from tsm.layout import BEST_CHECKPOINT_LINK, MODEL_SELECTION
from tsm.train.loop import train
from tsm.train.selection import ModelSelection


@pytest.fixture
def tiny_benchmark(tmp_path):
    root = tmp_path / "benchmarks"
    for name in ("monash_m3_yearly", "monash_tourism_yearly"):
        build_competition_dataset(name, root)
    spec = tmp_path / "bench.yaml"
    spec.write_text(yaml.safe_dump({"name": "tiny", "datasets": [
        {"name": "monash_m3_yearly", "offset": -6, "prediction_length": 6, "num_rolls": 1, "freq": "Y"},
        {"name": "monash_tourism_yearly", "offset": -4, "prediction_length": 4, "num_rolls": 1, "freq": "Y"},
    ]}))
    return spec, root


def test_evaluation_during_training_keeps_the_best(tmp_path, corpus, tiny_benchmark):
    spec, root = tiny_benchmark
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=6, save_steps=100, save_total_limit=1, benchmark_config=str(spec),
                      benchmark_datasets_root=str(root), benchmark_eval_steps=2, benchmark_top_k=2,
                      learning_rate=3e-3))
    best = json.loads((out / MODEL_SELECTION).read_text())
    entries = best["best_checkpoints"]
    assert best["metric"] == "wql" and len(entries) == 2
    assert entries[0]["score"] <= entries[1]["score"]
    assert {e["step"] for e in entries} <= {2, 4, 6}
    # rotation keeps the newest (save_total_limit=1) and the top-2, nothing else
    kept = {p.name for p in out.glob("checkpoint-*")}
    assert kept == {"checkpoint-6"} | {e["path"] for e in entries}
    assert (out / BEST_CHECKPOINT_LINK).resolve() == (out / entries[0]["path"]).resolve()
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("benchmark/avg_wql", "benchmark/avg_mase", "benchmark/relative_wql", "benchmark/relative_mase",
                "benchmark/monash_m3_yearly/wql", "benchmark/monash_tourism_yearly/mase"):
        assert tag in tags
    relative = [e.value for e in events.Scalars("benchmark/relative_wql")]
    assert [e.step for e in events.Scalars("benchmark/relative_wql")] == [2, 4, 6]
    assert all(math.isfinite(v) and v > 0 for v in relative)
    log = (out / "training.log").read_text()
    assert "Benchmark at step 4:" in log and "relative_wql=" in log


@pytest.mark.parametrize("metric", ["wql", "mase", "composite"])
def test_each_checkpoint_metric_ranks_by_its_own_score(tmp_path, corpus, tiny_benchmark, metric):
    spec, root = tiny_benchmark
    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=4, save_steps=100, benchmark_config=str(spec),
                      benchmark_datasets_root=str(root), benchmark_eval_steps=2, benchmark_checkpoint_metric=metric,
                      learning_rate=3e-3, **{"benchmark_composite_weights.wql": 1.0,
                                             "benchmark_composite_weights.mase": 3.0}))
    chosen = json.loads((out / MODEL_SELECTION).read_text())

    def own(entry: dict) -> float:  # the score `metric` stands for, from the relative scores the run recorded
        wql, mase = entry["relative_wql"], entry["relative_mase"]
        return {"wql": wql, "mase": mase, "composite": (1.0 * wql + 3.0 * mase) / 4.0}[metric]

    assert chosen["metric"] == metric and [e["step"] for e in chosen["history"]] == [2, 4]
    for entry in chosen["history"]:
        assert entry["relative_wql"] != pytest.approx(entry["relative_mase"], rel=1e-3)  # a wrong one would show
        assert entry["score"] == pytest.approx(own(entry), rel=1e-12)
    best = min(chosen["history"], key=lambda e: (own(e), e["step"]))
    assert chosen["best_checkpoints"][0]["step"] == best["step"]


def test_missing_benchmark_dataset_fails_before_training(tmp_path, corpus, tiny_benchmark):
    spec, _ = tiny_benchmark
    with pytest.raises(ConfigError, match="monash_m3_yearly is missing.*tsm data build-offline"):
        train(tiny_config(corpus, tmp_path / "run", benchmark_config=str(spec),
                          benchmark_datasets_root=str(tmp_path / "empty")))
    assert not (tmp_path / "run" / "final-checkpoint").exists()


def test_composite_ranking_and_link(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-2").mkdir()
    selection = ModelSelection(tmp_path, "composite", patience=None, resume_step=0, top_k=1)
    scores = {1: {"relative_wql": 0.9, "relative_mase": 1.3}, 2: {"relative_wql": 1.0, "relative_mase": 1.0}}
    for step, s in scores.items():
        selection.record(step, {**s, "composite": 0.5 * s["relative_wql"] + 0.5 * s["relative_mase"]}, write=True)
    entries = json.loads((tmp_path / MODEL_SELECTION).read_text())["best_checkpoints"]
    assert [e["step"] for e in entries] == [2]  # 1.0 beats 1.1
    assert (tmp_path / BEST_CHECKPOINT_LINK).resolve() == (tmp_path / "checkpoint-2").resolve()
    selection.record(3, {**scores[1], "composite": float("nan")}, write=True)  # a NaN score is never "best"
    assert json.loads((tmp_path / MODEL_SELECTION).read_text())["best_checkpoints"][0]["step"] == 2
    # Rotation keeps the newest and the top-K, and nothing else.
    (tmp_path / "checkpoint-3").mkdir()
    selection.rotate(keep=1)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
