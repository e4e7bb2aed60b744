"""Model cards: written into every model folder, in the hub's convention, with scores on request; and
`tsm push`, which refuses fast and clearly where the hub cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from huggingface_hub import ModelCard

from tests.conftest import random_walks, tiny_config, write_corpus
from tsm.card import CARD_FILE, model_card
from tsm.cli import main as tsm_main
from tsm.eval.benchmark import relative_scores
from tsm.hub import DOWNLOAD_MARKER
from tsm.provenance import PROVENANCE_FILE
from tsm.train.loop import train


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("card")
    corpus = write_corpus(base / "walks", random_walks(64, 200, 400))
    # A folder `tsm data download` wrote: the card cites its hub repo under `datasets`.
    marker = {"repo": "autogluon/chronos_datasets", "name": "walks", "sha": "abc"}
    (corpus / DOWNLOAD_MARKER).write_text(json.dumps(marker))
    stage1 = train(tiny_config(corpus, base / "stage1", max_steps=4, save_steps=2))
    stage2 = train(tiny_config(corpus, base / "stage2", max_steps=2, save_steps=2, random_init=False,
                               model_id=str(stage1), context_length=256))
    return {"stage1": stage1, "stage2": stage2}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_every_model_folder_carries_a_card_the_hub_parses(stages):
    for folder in (stages["stage1"], stages["stage1"].parent / "checkpoint-2", stages["stage2"]):
        text = (folder / CARD_FILE).read_text()
        meta = front_matter(text)
        assert meta["library_name"] == "chronos-forecasting" and meta["pipeline_tag"] == "time-series-forecasting"
        assert meta["license"] == "apache-2.0" and "time series" in meta["tags"]
        assert meta["datasets"] == ["autogluon/chronos_datasets"]
        assert "base_model" not in meta  # a local start is not a hub model
        assert ModelCard.load(folder / CARD_FILE).data.to_dict()["pipeline_tag"] == "time-series-forecasting"
    card = (stages["stage2"] / CARD_FILE).read_text()
    config = json.loads((stages["stage2"] / "config.json").read_text())
    assert "| Context length | 256 |" in card and f"| Layers | {config['num_layers']} |" in card
    assert "This folder is **stage2** at step 2, started from `" + str(stages["stage1"].resolve()) + "`" in card
    assert "Its corpora:\n- `walks`: 64 series, probability 1" in card and "Inherited from stage1:" in card


def test_a_hub_start_model_is_the_base_model(stages, tmp_path):
    folder = tmp_path / "tuned"
    folder.mkdir()
    (folder / "config.json").write_text((stages["stage1"] / "config.json").read_text())
    provenance = json.loads((stages["stage1"] / PROVENANCE_FILE).read_text())
    (folder / PROVENANCE_FILE).write_text(json.dumps({**provenance, "start_model": "amazon/chronos-2"}))
    assert front_matter(model_card(folder))["base_model"] == "amazon/chronos-2"


def scores_csv(path: Path, model: str, values: list[tuple[str, float, float]]) -> Path:
    pd.DataFrame([{"dataset": d, "model": model, "MASE": m, "WQL": w, "regime": "zero-shot"} for d, w, m in values]
                 ).to_csv(path, index=False)
    return path


def test_card_command_adds_scores_and_their_ratio_to_seasonal_naive(stages, tmp_path, capsys):
    own = scores_csv(tmp_path / "stage2.csv", "stage2", [("m3_monthly", 0.1, 0.9), ("tourism_yearly", 0.2, 3.0)])
    naive = scores_csv(tmp_path / "naive.csv", "seasonal-naive", [("m3_monthly", 0.125, 1.0),
                                                                  ("tourism_yearly", 0.16, 3.2)])
    assert tsm_main(["card", "--model", str(stages["stage2"]), "--scores", str(own), str(naive)]) == 0
    card = (stages["stage2"] / CARD_FILE).read_text()
    assert "| m3_monthly | 0.1000 | 0.9000 | 0.800 | 0.900 | zero-shot |" in card
    assert "| tourism_yearly | 0.2000 | 3.0000 | 1.250 | 0.938 | zero-shot |" in card
    expected = relative_scores(pd.concat([pd.read_csv(own), pd.read_csv(naive)])).set_index("model")
    assert (f"WQL {expected.loc['stage2', 'WQL']:.3f}, MASE {expected.loc['stage2', 'MASE']:.3f}." in card)
    front_matter(card)  # still a card the hub reads
    capsys.readouterr()
    both = tsm_main(["card", "--model", str(stages["stage2"]), "--scores", str(own),
                     str(scores_csv(tmp_path / "s1.csv", "stage1", [("m3_monthly", 0.1, 1.0)]))])
    assert both == 2 and "the scores hold several models (stage2, stage1)" in capsys.readouterr().err


def test_push_fails_fast_and_clearly_without_the_hub(stages, tmp_path, capsys, monkeypatch):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}
    card = stages["stage1"] / CARD_FILE
    card.unlink()
    result = subprocess.run([sys.executable, "-m", "tsm.cli", "push", "--model", str(stages["stage1"]), "--repo",
                             "me/chronos2-tiny"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "could not reach the Hugging Face hub at http://127.0.0.1:9" in result.stderr
    # fast on any machine: it stops at the refusal itself, not after waiting out the probe's deadline
    assert "Connection refused" in result.stderr and "no answer within" not in result.stderr
    assert "nothing was uploaded" in result.stderr and str(card) in result.stderr
    assert front_matter(card.read_text())["library_name"] == "chronos-forecasting"  # written for the next try
    # Arguments are checked before the hub is asked: in this process (its huggingface_hub read the environment
    # at import, which is why the unreachable hub above is a process of its own).
    monkeypatch.setenv("HF_ENDPOINT", env["HF_ENDPOINT"])
    for args, message in ((["--repo", "no-owner"], "expected a hub repo id OWNER/NAME"),
                          (["--repo", "me/x", "--model", str(tmp_path)], "not a model folder (no config.json)")):
        capsys.readouterr()
        assert tsm_main(["push", "--model", str(stages["stage1"]), *args]) == 2
        assert message in capsys.readouterr().err
