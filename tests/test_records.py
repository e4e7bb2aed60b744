"""tsm.records: the typed records a run writes and the report reads. Each reads back as written, reads old
files (missing keys defaulted, a newer writer's keys ignored) and names a file of another shape; the leg
state `tsm launch` keeps between legs (final-checkpoint parked) follows the run's training summary."""

import json

import pytest

from tsm.atomic import write_json
from tsm.layout import FINAL_CHECKPOINT, FINISHED_AT_SIGNAL, MODEL_SELECTION, PARKED_FINAL_CHECKPOINT, TRAINING_SUMMARY
from tsm.records import (
    DataCheckReport,
    DatasetCheck,
    Leg,
    LengthStats,
    ModelSelectionRecord,
    Range,
    SeriesCounts,
    TrainingSummary,
    ValueStats,
    park_final_checkpoint,
    restore_parked_final_checkpoint,
    run_has_finished,
)


def leg(first: int, last: int, status: str) -> Leg:
    return Leg("2030-01-02T03:04:05+00:00", "2030-01-02T03:05:05+00:00", first, last, 60.0, status)


# ------------------------------------------------------------------------------------ training summary
def test_training_summary_reads_back_as_written_and_adds_up_its_legs(tmp_path):
    written = TrainingSummary(max_steps=100, legs=[leg(0, 40, "preempted"), leg(40, 100, "finished")],
                              last_loss=0.25, bad_steps=1, exported="checkpoint-80")
    written.write(tmp_path)
    read = TrainingSummary.read(tmp_path)
    assert read == written
    assert (read.steps, read.seconds, read.status, read.finished) == (100, 120.0, "finished", True)
    assert TrainingSummary.read(tmp_path / "nothing-here") is None
    assert TrainingSummary(max_steps=5).status == "not started" and not TrainingSummary(max_steps=5).finished


def test_training_summary_of_an_older_or_newer_writer_reads_and_another_shape_is_named(tmp_path):
    data = {"max_steps": 10, "legs": [vars(leg(0, 10, "stopped early"))], "written_by": "a newer tsm"}
    (tmp_path / TRAINING_SUMMARY).write_text(json.dumps(data))  # no last_loss, bad_steps, exported, schema
    read = TrainingSummary.read(tmp_path)
    assert read.finished and read.last_loss is None and read.bad_steps == 0 and read.exported is None
    (tmp_path / TRAINING_SUMMARY).write_text(json.dumps({"legs": []}))
    with pytest.raises(ValueError, match=f"{TRAINING_SUMMARY}: not a tsm training summary"):
        TrainingSummary.read(tmp_path)


# ------------------------------------------------------------------------------------------- leg state
def finished_run(tmp_path, status: str = "finished"):
    run = tmp_path / "run"
    (run / FINAL_CHECKPOINT).mkdir(parents=True)
    (run / FINAL_CHECKPOINT / "model.safetensors").write_bytes(b"weights")
    TrainingSummary(max_steps=10, legs=[leg(0, 10, status)]).write(run)
    return run


def test_a_parked_final_checkpoint_comes_back_for_the_same_job_only(tmp_path):
    run = finished_run(tmp_path)
    park_final_checkpoint(run, "4242")
    assert not (run / FINAL_CHECKPOINT).exists() and (run / PARKED_FINAL_CHECKPOINT).is_dir()
    assert (run / FINISHED_AT_SIGNAL).read_text() == "4242"
    assert restore_parked_final_checkpoint(run, None, 0) is None  # outside a SLURM job: nothing to restore
    # Node 1 of the job's next leg ends too, but only node 0 moves the folder back.
    assert restore_parked_final_checkpoint(run, "4242", 1) == run / FINAL_CHECKPOINT
    assert (run / PARKED_FINAL_CHECKPOINT).is_dir()
    assert restore_parked_final_checkpoint(run, "4242", 0) == run / FINAL_CHECKPOINT
    assert (run / FINAL_CHECKPOINT / "model.safetensors").read_bytes() == b"weights"
    assert not (run / PARKED_FINAL_CHECKPOINT).exists()


def test_another_jobs_mark_is_stale_and_node_0_removes_it(tmp_path):
    run = finished_run(tmp_path)
    park_final_checkpoint(run, "4242")
    assert restore_parked_final_checkpoint(run, "4243", 1) is None and (run / FINISHED_AT_SIGNAL).exists()
    assert restore_parked_final_checkpoint(run, "4243", 0) is None and not (run / FINISHED_AT_SIGNAL).exists()


def test_an_unfinished_run_has_nothing_to_restore(tmp_path):
    run = finished_run(tmp_path, status="preempted")
    assert not run_has_finished(run)
    park_final_checkpoint(run, "4242")
    assert restore_parked_final_checkpoint(run, "4242", 0) is None
    (run / TRAINING_SUMMARY).write_text("{")  # an unreadable summary: the next leg trains and says why
    assert not run_has_finished(run)
    assert run_has_finished(finished_run(tmp_path / "other", status="stopped early"))


# ------------------------------------------------------------------------------------ data-check report
def a_data_check_report() -> DataCheckReport:
    target = ValueStats(dtype="list<item: double>", variates=Range(1, 2), values=500, nan=5, nan_fraction=0.01,
                        inf=0, inf_fraction=0.0, float32_overflow=0)
    usable = DatasetCheck(dataset="data/train", ok=True, min_length=80, schema={"target": "list<item: double>"},
                          num_series=4, length=LengthStats(min=90, p5=91.0, median=120.0, p95=200.0, max=210,
                                                           mean=125.0),
                          target=target, series=SeriesCounts(total=4, usable=4), covariates={"past": target},
                          seconds=0.01, series_per_second=400)
    broken = DatasetCheck(dataset="data/missing", ok=False, errors=["data/missing: no such folder"], min_length=80)
    return DataCheckReport(ok=False, min_length=80, datasets=[usable, broken])


def test_data_check_report_reads_back_as_written(tmp_path):
    written = a_data_check_report()
    path = written.write(tmp_path / "report.json")
    assert DataCheckReport.read(path) == written
    assert DataCheckReport.read(path).datasets[0].value_columns == {"target": written.datasets[0].target,
                                                                     "past": written.datasets[0].target}


def test_an_old_data_check_report_reads_and_a_newer_writers_keys_are_ignored(tmp_path):
    data = a_data_check_report().to_json()
    for dataset in data["datasets"]:
        for key in ("covariates", "seconds", "series_per_second"):  # figures an older writer did not have
            del dataset[key]
        dataset["new_figure"] = 1
    data["datasets"][0]["series"] = {"total": 4, "usable": 4, "uncounted_kind": 2}
    (tmp_path / "report.json").write_text(json.dumps(data))
    read = DataCheckReport.read(tmp_path / "report.json")
    assert read.datasets[0].covariates == {} and read.datasets[0].seconds is None
    assert read.datasets[0].series == SeriesCounts(total=4, usable=4)
    assert read.datasets[0].target == a_data_check_report().datasets[0].target


@pytest.mark.parametrize("content", ["{", "[1, 2]", json.dumps({"ok": True, "datasets": [{"rows": 3}]})])
def test_a_file_that_is_not_a_data_check_report_is_named(tmp_path, content):
    (tmp_path / "report.json").write_text(content)
    with pytest.raises(ValueError, match="report.json: not a tsm data-check report"):
        DataCheckReport.read(tmp_path / "report.json")


# ------------------------------------------------------------------------------------- model selection
HISTORY = [{"step": 0, "score": 0.5, "validation_wql": 0.5}, {"step": 10, "score": 0.4, "validation_wql": 0.4}]
BEST = [{**HISTORY[1], "path": "checkpoint-10"}]


def test_a_running_record_has_no_decision_and_a_finished_one_has_it(tmp_path):
    running = ModelSelectionRecord(metric="validation_wql", history=HISTORY, best_checkpoints=BEST)
    running.write(tmp_path)
    assert list(json.loads((tmp_path / MODEL_SELECTION).read_text())) == [
        "metric", "lower_is_better", "history", "best_checkpoints"]
    assert ModelSelectionRecord.read(tmp_path) == running and not running.finished
    finished = ModelSelectionRecord(metric="validation_wql", history=HISTORY, best_checkpoints=BEST, start_score=0.5,
                                    best_step=10, best_score=0.4, exported="checkpoint-10", beat_start=True,
                                    verdict="Fine-tuning beat the start")
    finished.write(tmp_path)
    assert ModelSelectionRecord.read(tmp_path) == finished and finished.finished
    assert ModelSelectionRecord.read(tmp_path / "no-stage") is None


def test_the_file_the_trainer_wrote_before_the_record_rewrites_byte_for_byte(tmp_path):
    """model-selection.json as the trainer wrote it as a plain dict: metric, lower_is_better, history,
    best_checkpoints, then the decision once finished. Read and written again, not a byte changes."""
    decision = {"start_score": 0.5, "best_step": 10, "best_score": 0.4, "exported": "checkpoint-10",
                "beat_start": True, "verdict": "Fine-tuning beat the start"}
    for old in ({"metric": "wql", "lower_is_better": True, "history": HISTORY, "best_checkpoints": BEST},
                {"metric": "wql", "lower_is_better": True, "history": HISTORY, "best_checkpoints": BEST, **decision}):
        before = write_json(tmp_path / "old" / MODEL_SELECTION, old).read_bytes()
        after = ModelSelectionRecord.read(tmp_path / "old").write(tmp_path / "new").read_bytes()
        assert after == before


def test_a_selection_record_of_another_shape_is_named(tmp_path):
    (tmp_path / MODEL_SELECTION).write_text(json.dumps({"metric": "wql", "history": [{"score": 1.0}],
                                                        "written_by": "a newer tsm"}))
    with pytest.raises(ValueError, match=f"{MODEL_SELECTION}: not a tsm model-selection record.*'step'"):
        ModelSelectionRecord.read(tmp_path)
    (tmp_path / MODEL_SELECTION).write_text("not json")
    with pytest.raises(ValueError, match=f"{MODEL_SELECTION}: not a tsm model-selection record"):
        ModelSelectionRecord.read(tmp_path)
