"""report_to: MLflow and W&B with the real packages, offline. What each tracker holds is read back from its own
store (MLflow's file store, a tracking server this test starts on loopback, W&B's offline run files) and compared
with the TensorBoard events of the same run; a resumed run continues the same tracker run; a tracker that cannot
be reached warns once and training finishes.

The trainer and the tracker packages are imported inside the tests that use them (they take seconds to import).
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_config
from tsm.config import ConfigError, load_config
from tsm.layout import TENSORBOARD, TRACKER_RUNS
from tsm.train.trackers import TrackerHub, flatten_config, read_tracker_runs

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(autouse=True)
def offline_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind this switch


# --- pure pieces ---------------------------------------------------------------------------------------------

def test_flatten_config_gives_dotted_string_parameters():
    flat = flatten_config({"a": 1, "model": {"d_model": 64, "quantiles": [0.1, 0.5]}, "x": None, "s": "t"})
    assert flat == {"a": "1", "model.d_model": "64", "model.quantiles": "[0.1, 0.5]", "x": "null", "s": "t"}


def test_report_to_defaults_to_tensorboard_and_takes_the_top_level_shorthand(tmp_path):
    assert load_config(None).monitoring.report_to == ["tensorboard"]
    cfg = load_config(None, settings={"report_to": ["tensorboard", "mlflow"], "profile_steps": [3, 5]})
    assert cfg.monitoring.report_to == ["tensorboard", "mlflow"] and cfg.monitoring.profile_steps == [3, 5]
    assert "report_to" in cfg.to_yaml().split("monitoring:")[1]  # written nested: run-neutral between legs


@pytest.mark.parametrize(("settings", "message"), [
    ({"report_to": ["comet"]}, "monitoring.report_to.0"),
    ({"report_to": ["mlflow", "mlflow"]}, "names a tracker twice"),
    ({"profile_steps": [5, 3]}, "1 <= start <= stop"),
    ({"profile_steps": [0, 3]}, "1 <= start <= stop"),
    ({"profile_steps": [3]}, "profile_steps"),
])
def test_bad_tracker_settings_are_refused_naming_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, settings=settings)


def test_a_tracker_whose_package_is_missing_stops_the_run_before_any_work(monkeypatch):
    from tsm.train import trackers

    monkeypatch.setitem(trackers.EXTERNAL_TRACKERS, "wandb", "tsm_no_such_package")
    settings = load_config(None, settings={"report_to": ["tensorboard", "wandb"]}).monitoring
    with pytest.raises(ConfigError, match=r"report_to names wandb but the package is not installed: pip install"):
        TrackerHub.check_installed(settings)


def test_a_run_folder_without_tracker_runs_starts_new_ones(tmp_path):
    assert read_tracker_runs(tmp_path) == {}
    (tmp_path / TRACKER_RUNS).write_text("{not json")
    assert read_tracker_runs(tmp_path) == {}


# --- the hub against servers that do not answer ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_for(uri: str, **more):
    return load_config(None, settings={"report_to": ["mlflow"], "mlflow_tracking_uri": uri, **more}).monitoring


def test_a_refused_connection_warns_once_and_every_point_is_counted(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # nothing listens: fail at once, not after backoff
    hub = TrackerHub(settings_for(f"http://127.0.0.1:{free_port()}"), tmp_path, {"seed": 1})
    with caplog.at_level(logging.INFO, logger="tsm"):
        for step in range(1, 51):
            hub.log(step, {"train/loss": 1.0 / step, "train/lr": 0.1})
        hub.close(tmp_path)
    failures = [r for r in caplog.records if "Tracker mlflow failed" in r.getMessage()]
    assert len(failures) == 1 and "could not start its run" in failures[0].getMessage()
    assert "MLflow at http://127.0.0.1" in failures[0].getMessage()
    (sender,) = hub.senders
    assert sender.sent == 0 and sender.not_sent == 100 and not sender.thread.is_alive()
    assert "0 scalar points sent, 100 not sent" in caplog.text
    assert not (tmp_path / TRACKER_RUNS).exists()


def test_logging_never_waits_on_a_server_that_does_not_answer(tmp_path, caplog, monkeypatch):
    """A server that takes the connection and never replies holds the sending thread; the training thread's log
    calls still return, and close gives up after its timeout, saying so."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # once the socket closes, the thread ends soon
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        hub = TrackerHub(settings_for(f"http://127.0.0.1:{silent.getsockname()[1]}"), tmp_path, {"seed": 1})
        (sender,) = hub.senders
        for step in range(1, 2001):
            hub.log(step, {"train/loss": 1.0})
        assert sender.thread.is_alive() and sender.sent == 0  # still waiting for the server's first answer
        with caplog.at_level(logging.WARNING, logger="tsm"):
            hub.close(timeout_s=0.2)
        assert "Tracker mlflow did not finish within" in caplog.text
    finally:
        silent.close()


def test_a_leg_ended_by_an_exception_still_sends_and_the_next_leg_continues_the_run(tmp_path):
    """A preempted leg ends by an exception, not through monitor.finish: the exit hook sends what is queued and
    marks the run KILLED; the next leg from the same folder continues that run, its parameters kept."""
    uri = (tmp_path / "mlruns").as_uri()
    first = TrackerHub(settings_for(uri), tmp_path, {"max_steps": 10, "seed": 1})
    first.log(1, {"train/loss": 2.0, "train/lr": 0.1})
    first.log(2, {"train/loss": 1.5})
    first._close_at_exit()  # what atexit runs as the preempted process exits
    run_id = read_tracker_runs(tmp_path)["mlflow"]["run_id"]
    client = mlflow.tracking.MlflowClient(uri)
    assert client.get_run(run_id).info.status == "KILLED"
    second = TrackerHub(settings_for(uri), tmp_path, {"max_steps": 20, "seed": 1})
    second.log(3, {"train/loss": 1.0})
    second.close()
    assert read_tracker_runs(tmp_path)["mlflow"]["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"max_steps": "10", "seed": "1"}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")] == [(1, 2.0), (2, 1.5),
                                                                                             (3, 1.0)]
    assert mlflow_points(uri, run_id) == Counter([point("train/loss", 1, 2.0), point("train/lr", 1, 0.1),
                                                  point("train/loss", 2, 1.5), point("train/loss", 3, 1.0)])


# --- real runs: what the trackers hold equals TensorBoard's events (e2e: each trains a tiny model) -----------

def tensorboard_points(run: Path) -> Counter:
    """(tag, step, float32 value) of every scalar event, duplicates kept (a resumed leg rewrites some steps)."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(run / TENSORBOARD), size_guidance={SCALARS: 0}).Reload()
    return Counter(point(tag, e.step, e.value) for tag in events.Tags()["scalars"] for e in events.Scalars(tag))


def point(tag: str, step: int, value: float) -> tuple[str, int, str]:
    return tag, int(step), repr(np.float32(value))  # TensorBoard keeps float32; nan compares equal as text


def mlflow_points(uri: str, run_id: str) -> Counter:
    client = mlflow.tracking.MlflowClient(uri)
    return Counter(point(key, m.step, m.value) for key in client.get_run(run_id).data.metrics
                   for m in client.get_metric_history(run_id, key))


def train_run(corpus: Path, out: Path, **settings) -> Path:
    from tsm.train.loop import train

    given = {"max_steps": 6, "log_steps": 2, "save_steps": 3, "monitoring.health_report_interval": 3, **settings}
    return train(tiny_config(corpus, out, **given))


@pytest.mark.e2e
def test_mlflow_file_store_holds_what_tensorboard_holds_and_a_resumed_leg_continues_the_run(tmp_path, corpus):
    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "run"
    train_run(corpus, out, report_to=["tensorboard", "mlflow"], mlflow_tracking_uri=uri)
    run_id = read_tracker_runs(out)["mlflow"]["run_id"]
    client = mlflow.tracking.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == f"{tmp_path.name}/run"
    first = mlflow_points(uri, run_id)
    assert first == tensorboard_points(out) and len(first) > 50
    # The resolved config as parameters, and the final model as an artifact.
    assert run.data.params["model.d_model"] == "64" and run.data.params["max_steps"] == "6"
    assert run.data.params["monitoring.report_to"] == "['tensorboard', 'mlflow']"
    artifacts = {a.path for a in client.list_artifacts(run_id, "final-checkpoint")}
    assert {"final-checkpoint/config.json", "final-checkpoint/model.safetensors"} <= artifacts

    # A second leg (a longer max_steps, as a time-limit leg's rerun) continues the same MLflow run.
    train_run(corpus, out, report_to=["tensorboard", "mlflow"], mlflow_tracking_uri=uri, max_steps=9)
    assert read_tracker_runs(out)["mlflow"]["run_id"] == run_id
    assert len(client.search_runs([run.info.experiment_id])) == 1
    both = mlflow_points(uri, run_id)
    assert both == tensorboard_points(out)
    assert {s for tag, s, _ in both if tag == "train/loss"} == {2, 3, 4, 6, 8, 9}  # log and health-report steps
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params["max_steps"] == "6"  # MLflow keeps parameters fixed
    log = (out / "training.log").read_text()
    assert "MLflow: continuing run" in log and "max_steps 6 -> 9" in log


@pytest.mark.e2e
def test_an_unreachable_mlflow_server_warns_and_training_finishes(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = tmp_path / "run"
    final = train_run(corpus, out, report_to=["tensorboard", "mlflow"],
                      mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    assert (final / "model.safetensors").is_file()
    log = (out / "training.log").read_text()
    assert log.count("Tracker mlflow failed") == 1 and "training goes on without it" in log
    sent = [line for line in log.splitlines() if "Tracker mlflow:" in line]
    assert len(sent) == 1 and "0 scalar points sent" in sent[0]
    not_sent = int(sent[0].split(", ")[1].split()[0])
    assert not_sent == sum(tensorboard_points(out).values())  # every figure TensorBoard got is counted


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on a loopback port, ended by the test."""
    port = free_port()
    log = open(tmp_path / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "mlflow-artifacts")],
        stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_listening(port, server)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def wait_until_listening(port: int, server: subprocess.Popen) -> None:
    import urllib.request

    while server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            threading.Event().wait(0.2)  # the server is starting: ask again
    raise AssertionError(f"mlflow server exited with status {server.returncode} before it listened")


@pytest.mark.e2e
def test_mlflow_tracking_server_holds_what_tensorboard_holds(tmp_path, corpus, mlflow_server):
    out = tmp_path / "run"
    train_run(corpus, out, report_to=["tensorboard", "mlflow"], mlflow_tracking_uri=mlflow_server)
    run_id = read_tracker_runs(out)["mlflow"]["run_id"]
    assert mlflow_points(mlflow_server, run_id) == tensorboard_points(out)
    client = mlflow.tracking.MlflowClient(mlflow_server)
    assert client.get_run(run_id).data.params["model.num_layers"] == "2"
    assert "final-checkpoint/model.safetensors" in {a.path for a in client.list_artifacts(run_id, "final-checkpoint")}


# --- W&B offline ---------------------------------------------------------------------------------------------

def wandb_points(out: Path) -> tuple[set[str], Counter]:
    """The run ids and (tag, step, value) of every history row in the run folder's offline W&B runs."""
    ids, found = set(), Counter()
    for path in sorted((out / "wandb").glob("offline-run-*/run-*.wandb")):
        ids.add(path.stem.removeprefix("run-"))
        for row in read_wandb_history(path):
            step = row.pop("train/global_step")
            found.update(point(tag, step, value) for tag, value in row.items()
                         if not tag.startswith("_") and isinstance(value, (int, float)))
    return ids, found


def read_wandb_history(path: Path) -> list[dict]:
    """The history rows of an offline `.wandb` file: a ":W&B" header, then LevelDB-log records (32 KiB blocks,
    7-byte record headers: CRC, length, type full/first/middle/last) holding wandb's protobuf `Record`s."""
    from wandb.proto import wandb_internal_pb2

    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, rows = header, b"", []
    while pos + header <= len(data):
        room = block - pos % block
        if room < header:  # a block's trailer is padding
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + header])
        if kind == 0:  # zero padding up to the block's end
            pos += room
            continue
        chunk = data[pos + header:pos + header + length]
        pos += header + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.e2e
def test_wandb_offline_run_holds_what_tensorboard_holds_and_a_resumed_leg_keeps_its_id(tmp_path, corpus,
                                                                                       monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    out = tmp_path / "run"
    train_run(corpus, out, report_to=["tensorboard", "wandb"])
    run_id = read_tracker_runs(out)["wandb"]["run_id"]
    ids, points = wandb_points(out)
    assert ids == {run_id} and points == tensorboard_points(out)
    train_run(corpus, out, report_to=["tensorboard", "wandb"], max_steps=8)
    ids, points = wandb_points(out)
    assert ids == {run_id} and read_tracker_runs(out)["wandb"]["run_id"] == run_id
    assert points == tensorboard_points(out)
