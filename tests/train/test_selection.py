"""ModelSelection: what a run exports and when it stops early, kept across a resume; what it writes is the
typed record the report reads (tsm.records.ModelSelectionRecord)."""

from tsm.records import ModelSelectionRecord
from tsm.train.selection import ModelSelection


def test_a_tie_never_beats_the_start_and_patience_counts_evaluations_since_the_best(tmp_path):
    selection = ModelSelection(tmp_path, "validation_wql", patience=2, resume_step=0)
    selection.record(0, {selection.metric: 0.5}, write=True)
    selection.record(10, {selection.metric: 0.5}, write=True)
    assert selection.best()["step"] == 0 and selection.evaluations_since_best() == 1
    assert not selection.should_stop_early()
    selection.record(20, {selection.metric: 0.6}, write=True)
    assert selection.should_stop_early()
    verdict = selection.finish(0, write=True)
    assert verdict.startswith("Nothing beat the start (validation_wql 0.5; best fine-tuned 0.5 at step 10)")
    saved = ModelSelectionRecord.read(tmp_path)
    assert saved.finished and saved.verdict == verdict
    assert saved.exported == "start" and saved.beat_start is False and saved.best_step == 10
    assert [e["step"] for e in saved.history] == [0, 10, 20] and saved.best_checkpoints[0]["path"] == "checkpoint-10"


def test_improvement_resets_patience_and_is_exported(tmp_path):
    selection = ModelSelection(tmp_path, "validation_loss", patience=1, resume_step=0)
    for step, score in [(0, 3.0), (5, 2.5), (10, 2.0)]:
        selection.record(step, {selection.metric: score}, write=False)
    assert not selection.should_stop_early() and selection.best()["step"] == 10
    assert "3 -> 2 at step 10" in selection.finish(10, write=False)
    assert selection.summary["exported"] == "checkpoint-10" and selection.summary["beat_start"]


def test_resume_forgets_evaluations_after_its_checkpoint(tmp_path):
    first = ModelSelection(tmp_path, "validation_wql", patience=None, resume_step=0)
    for step, score in [(0, 1.0), (4, 0.9), (8, 0.8)]:
        first.record(step, {first.metric: score}, write=True)
    assert not ModelSelectionRecord.read(tmp_path).finished  # no decision until the run finishes
    resumed = ModelSelection(tmp_path, "validation_wql", patience=None, resume_step=4)
    assert [e["step"] for e in resumed.history] == [0, 4] and resumed.start_score == 1.0
    assert not resumed.should_stop_early()  # no patience: never stops early


def test_non_finite_scores_are_never_best(tmp_path):
    selection = ModelSelection(tmp_path, "validation_wql", patience=None, resume_step=0)
    selection.record(0, {selection.metric: 1.0}, write=False)
    selection.record(2, {selection.metric: float("nan")}, write=False)
    assert selection.best()["step"] == 0
