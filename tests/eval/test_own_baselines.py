"""tsm.eval.own_baselines: the baselines a user names for a run on their own data, checked before the DAG."""

import pytest

from tsm.config import ConfigError
from tsm.eval.own_baselines import check_baselines, local_baseline_folders, model_problem, name_problem
from tsm.layout import MODEL_CONFIG, SEASONAL_NAIVE


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    """A saved checkpoint's folder (its config.json), named relative to the current folder as a config names it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prev" / "final-checkpoint").mkdir(parents=True)
    (tmp_path / "prev" / "final-checkpoint" / MODEL_CONFIG).write_text("{}")
    return "prev/final-checkpoint"


def test_a_folder_a_hub_id_and_seasonal_naive_are_kept_in_order(checkpoint):
    named = {"previous": checkpoint, "small": "amazon/chronos-2-small", "naive.7": SEASONAL_NAIVE}
    assert list(check_baselines(named).items()) == list(named.items())
    assert local_baseline_folders(named) == [checkpoint]  # only the folder is a DAG input
    assert check_baselines(None) == {} and local_baseline_folders({}) == []


@pytest.mark.parametrize("name", ["start", "finetune", "stage1", "stage2", SEASONAL_NAIVE, "Start", "FINETUNE"])
def test_the_runs_own_model_names_are_refused(name):
    assert "the run's own models are named start, finetune" in name_problem(name)


@pytest.mark.parametrize("name", ["a/b", "../up", ".hidden", "-flag", "two words", "", "naïve", 3])
def test_names_unsafe_in_a_file_name_are_refused(name):
    assert "benchmark/<name>.csv" in name_problem(name)


@pytest.mark.parametrize("name", ["prev-relative", "prev-fev-summaries", "prev-leaderboard"])
def test_names_the_report_would_read_as_side_files_are_refused(name):
    assert "side file" in name_problem(name)


def test_a_missing_folder_or_one_without_a_model_is_named_with_its_key(checkpoint):
    assert "no folder results/old/final-checkpoint" in model_problem("results/old/final-checkpoint")
    assert "no folder ./old" in model_problem("./old")  # a leading ./ is never a hub id
    assert f"prev holds no {MODEL_CONFIG}" in model_problem("prev")
    assert model_problem("") and model_problem(None)
    with pytest.raises(ConfigError) as refused:
        check_baselines({"good": checkpoint, "gone": "results/old/final-checkpoint", "start": checkpoint})
    message = str(refused.value)  # every problem at once, each under its own key
    assert "data.local.baselines.gone ('results/old/final-checkpoint'): no folder" in message
    assert "data.local.baselines.start ('prev/final-checkpoint'): the run's own models" in message
    assert "baselines.good" not in message


def test_two_names_that_differ_only_in_case_are_refused(checkpoint):
    with pytest.raises(ConfigError) as refused:
        check_baselines({"Last": checkpoint, "last": SEASONAL_NAIVE})
    assert "data.local.baselines.last ('seasonal-naive'): differs from the baseline Last only in case" in str(
        refused.value)
