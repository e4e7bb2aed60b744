"""tsm evaluate marks in-domain scores: a model really trained (tsm.train.loop.train) on a copy of a benchmark
dataset gets `in-domain` there and `zero-shot` elsewhere, in the CSV, the printed table and the log; a model
fine-tuned from it inherits the mark; hub ids, folders without provenance and the baseline are labelled."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import tiny_config
from tsm.cli import main
from tsm.eval.regime import IN_DOMAIN, NOT_APPLICABLE, UNKNOWN, ZERO_SHOT, match, model_regimes
from tsm.provenance import PROVENANCE_FILE, fingerprint
from tsm.train.loop import train

from .test_benchmark import seasonal_series, write_benchmark, write_series_folder

SEEN, UNSEEN = "seen_monthly", "unseen_monthly"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("regime")
    root = base / "benchmarks"
    write_series_folder(root / SEEN, seasonal_series(40, seed=0, min_length=100, max_length=200))
    write_series_folder(root / UNSEEN, seasonal_series(40, seed=1, min_length=100, max_length=200))
    benchmark = write_benchmark(base / "bench.yaml", [
        {"name": SEEN, "prediction_length": 12, "freq": "M"},
        {"name": UNSEEN, "prediction_length": 12, "freq": "M"},
    ])
    # The training corpus is a copy of one benchmark dataset under another name: only the content matches.
    corpus = shutil.copytree(root / SEEN, base / "corpora" / "my-sales")
    with restored_tsm_logger():
        model = train(tiny_config(corpus, base / "runs" / "finetune", max_steps=2, save_steps=2))
    return {"base": base, "root": root, "benchmark": benchmark, "corpus": corpus, "model": model}


@contextlib.contextmanager
def restored_tsm_logger():
    """Training points the `tsm` logger at its own handlers and stops propagation; later tests in this
    process (caplog listens at the root) need it back as it was."""
    logger = logging.getLogger("tsm")
    saved = logger.handlers[:], logger.propagate, logger.level
    try:
        yield
    finally:
        for handler in logger.handlers:
            if handler not in saved[0]:
                handler.close()
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


@pytest.fixture
def tsm_log(caplog):
    """The `tsm` logger's records (training sets it not to propagate to the root, where caplog listens)."""
    logger = logging.getLogger("tsm")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def test_a_model_trained_on_a_benchmark_copy_is_in_domain_there_only(setup, capsys, tsm_log):
    output = setup["base"] / "out" / "eval.csv"
    with tsm_log.at_level(logging.INFO, logger="tsm"):
        assert main(["evaluate", "--model", str(setup["model"]), "--model", "seasonal-naive",
                     "--benchmark", str(setup["benchmark"]), "--datasets-root", str(setup["root"]),
                     "--batch-size", "16", "--output", str(output)]) == 0
    results = pd.read_csv(output)
    assert list(results.columns) == ["dataset", "model", "MASE", "WQL", "regime", "regime_reason"]
    regimes = {(r.dataset, r.model): r.regime for r in results.itertuples()}
    model = str(setup["model"])
    assert regimes == {(SEEN, model): IN_DOMAIN, (UNSEEN, model): ZERO_SHOT,
                       (SEEN, "seasonal-naive"): NOT_APPLICABLE, (UNSEEN, "seasonal-naive"): NOT_APPLICABLE}
    reason = results.set_index(["dataset", "model"]).loc[(SEEN, model), "regime_reason"]
    assert "'my-sales'" in reason and str(setup["corpus"].resolve()) in reason and "content fingerprint" in reason
    assert "name" not in reason.split("same ")[1]  # matched by content, not by name

    printed = capsys.readouterr().out
    assert "regime" in printed.splitlines()[0] and "in-domain" in printed and "zero-shot" in printed
    assert "In-domain scores" in printed and f"{model} on {SEEN}: {reason}" in printed
    assert "regime_reason" not in printed  # the reason is listed once, under the table
    logged = [r.getMessage() for r in tsm_log.records if r.levelno == logging.WARNING]
    assert any(SEEN in m and "in-domain, not zero-shot" in m and "my-sales" in m for m in logged)
    assert not any(UNSEEN in m for m in logged)


def test_the_mark_is_inherited_by_a_model_fine_tuned_from_it(setup):
    other = setup["root"] / UNSEEN  # trained on the other dataset now, by name this time
    with restored_tsm_logger():
        tuned = train(tiny_config(other, setup["base"] / "runs" / "second", random_init=False,
                                  model_id=str(setup["model"]), max_steps=1, save_steps=1))
    regimes = model_regimes([str(tuned)], [SEEN, UNSEEN], setup["root"])[str(tuned)]
    assert regimes[SEEN].regime == IN_DOMAIN and "inherited from finetune" in regimes[SEEN].reason
    assert regimes[UNSEEN].regime == IN_DOMAIN and "same name and content fingerprint" in regimes[UNSEEN].reason


def test_models_without_provenance(setup, tmp_path, tsm_log):
    bare = shutil.copytree(setup["model"], tmp_path / "old-checkpoint")
    (bare / PROVENANCE_FILE).unlink()
    with tsm_log.at_level(logging.WARNING, logger="tsm"):
        regimes = model_regimes([str(bare), "amazon/chronos-2", "seasonal-naive"], [SEEN], setup["root"])
    assert regimes[str(bare)][SEEN].regime == UNKNOWN
    assert any("no training provenance" in r.getMessage() for r in tsm_log.records)
    assert regimes["amazon/chronos-2"][SEEN].regime == ZERO_SHOT
    assert regimes["seasonal-naive"][SEEN].regime == NOT_APPLICABLE


def test_match_by_name_or_fingerprint(setup):
    fp = fingerprint(setup["root"] / SEEN)["fingerprint"]
    by_name = [{"name": SEEN, "path": "/data/x", "fingerprint": "xxh3-128:other"}]
    assert match(by_name, SEEN, fp).regime == IN_DOMAIN and "same name" in match(by_name, SEEN, fp).reason
    by_content = [{"name": "x", "path": "/data/x", "fingerprint": fp}]
    assert match(by_content, SEEN, fp).regime == IN_DOMAIN
    assert match(by_content, SEEN, None).regime == ZERO_SHOT  # an unreadable dataset matches by name only
    assert match([], SEEN, fp).regime == ZERO_SHOT


def test_evaluate_keeps_the_trainer_columns(setup):
    from tsm.eval.benchmark import RESULT_COLUMNS

    # the trainer's own scoring (evaluate_forecasters) is unchanged: only `evaluate` adds the regime
    assert RESULT_COLUMNS == ["dataset", "model", "MASE", "WQL"]
    assert Path(setup["model"]).is_dir()
