"""Experiment trackers beside TensorBoard: MLflow and Weights & Biases (`report_to`), on rank 0 only.

Every scalar the monitor writes to TensorBoard also reaches each tracker named in `report_to`, with the resolved
config as parameters and the final model folder as an artifact. The training thread never waits on a tracker:
it only puts (step, scalars) on a queue. One sending thread per tracker starts (or continues) its run, sends the
figures, uploads the model and ends the run, so a slow or unreachable server costs the steps nothing. A tracker
that fails warns once, clearly, and its figures stay in TensorBoard; what it was not sent is counted and said.

A run folder keeps its trackers' run ids in `tracker-runs.json`: a later leg of the same run (a time limit, a
preemption, any resume from the folder) continues the same tracker run. The tracker packages are imported only
when named (`pip install 'tsm[trackers]'`).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import queue
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from tsm.atomic import write_text
from tsm.config import ConfigError, MonitorConfig
from tsm.layout import RESOLVED_CONFIG, TRACKER_RUNS

logger = logging.getLogger("tsm")

__all__ = ["TrackerHub", "flatten_config", "read_tracker_runs", "EXTERNAL_TRACKERS"]

# report_to name -> the package it needs
EXTERNAL_TRACKERS = {"mlflow": "mlflow", "wandb": "wandb"}
# A tracker that falls behind keeps at most this many log flushes queued; older ones beyond it are dropped and
# counted (a flush holds the ~30 scalars of one log step).
QUEUE_LIMIT = 10_000
MLFLOW_PARAM_LIMIT = 6000  # characters MLflow takes in one parameter value


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"model": {"d_model": 64}}` -> `{"model.d_model": "64"}`: the resolved config as tracker parameters."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


def read_tracker_runs(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The tracker runs a run folder continues: {tracker: {"run_id": ..., ...}} (empty for a new run)."""
    path = Path(output_dir) / TRACKER_RUNS
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("%s is unreadable (%s): trackers start new runs", path, error)
        return {}


class Tracker(ABC):
    """One tracker; every method runs on its own sending thread."""

    name: str
    takes_artifacts = True

    @abstractmethod
    def start(self, params: dict[str, str], config: dict[str, Any], previous: dict[str, Any] | None) -> dict:
        """Start a run, or continue `previous` (what an earlier leg recorded); returns what to record."""

    @abstractmethod
    def log(self, points: list[tuple[int, float, dict[str, float]]]) -> None:
        """Send (step, unix time, {tag: value}) points, in the order the monitor wrote them."""

    @abstractmethod
    def log_model(self, folder: Path) -> None:
        """Upload the final model folder."""

    @abstractmethod
    def finish(self, succeeded: bool) -> None:
        """End the run (a later leg may continue it)."""

    @abstractmethod
    def where(self) -> str:
        """Where the figures go, for messages."""


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(self, settings: MonitorConfig, run_name: str, output_dir: Path):
        from mlflow.tracking import MlflowClient  # lazily: only when report_to names mlflow

        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self.experiment = settings.mlflow_experiment
        self.run_name = run_name
        self.output_dir = output_dir
        self.run_id: str | None = None

    def where(self) -> str:
        return f"MLflow at {self.client.tracking_uri}"

    def start(self, params: dict[str, str], config: dict[str, Any], previous: dict[str, Any] | None) -> dict:
        client = self.client
        known: dict[str, str] = {}
        if previous and previous.get("tracking_uri") == client.tracking_uri:
            self.run_id = previous["run_id"]
            client.update_run(self.run_id, status="RUNNING")
            known = client.get_run(self.run_id).data.params
            logger.info("MLflow: continuing run %s", self.run_id)
        else:
            experiment = client.get_experiment_by_name(self.experiment)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment)
            self.run_id = client.create_run(experiment_id, run_name=self.run_name,
                                            tags={"tsm.output_dir": str(self.output_dir)}).info.run_id
            logger.info("MLflow: run %s in experiment %r at %s", self.run_id, self.experiment, client.tracking_uri)
        self._log_params(params, known)
        resolved = self.output_dir / RESOLVED_CONFIG
        if resolved.is_file():
            client.log_artifact(self.run_id, str(resolved))
        return {"run_id": self.run_id, "tracking_uri": client.tracking_uri, "experiment": self.experiment}

    def _log_params(self, params: dict[str, str], known: dict[str, str]) -> None:
        from mlflow.entities import Param

        changed = sorted(k for k, v in params.items() if k in known and known[k] != v)
        if changed:  # MLflow keeps a run's parameters fixed; a later leg's values are in its resolved config
            logger.info("MLflow keeps parameters fixed: changed in this leg (see its %s artifact): %s",
                        RESOLVED_CONFIG, ", ".join(f"{k} {known[k]} -> {params[k]}" for k in changed))
        too_long = sorted(k for k, v in params.items() if len(v) > MLFLOW_PARAM_LIMIT)
        if too_long:
            logger.info("MLflow: parameters longer than %d characters are only in the %s artifact: %s",
                        MLFLOW_PARAM_LIMIT, RESOLVED_CONFIG, ", ".join(too_long))
        new = [Param(k, v) for k, v in params.items() if k not in known and k not in too_long]
        for first in range(0, len(new), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=new[first:first + 100])

    def log(self, points: list[tuple[int, float, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(tag, value, int(at * 1000), step)
                   for step, at, scalars in points for tag, value in scalars.items()]
        for first in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[first:first + 1000])

    def log_model(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path=folder.name)

    def finish(self, succeeded: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if succeeded else "KILLED")


class WandbTracker(Tracker):
    name = "wandb"
    STEP = "train/global_step"  # the x-axis of every chart: a resumed leg may log steps W&B's own counter passed

    def __init__(self, settings: MonitorConfig, run_name: str, output_dir: Path):
        import wandb  # lazily: only when report_to names wandb

        self.wandb = wandb
        self.project = settings.wandb_project or os.environ.get("WANDB_PROJECT") or "tsm"
        self.entity = settings.wandb_entity
        self.run_name = run_name
        self.output_dir = output_dir
        self.run = None

    def where(self) -> str:
        mode = os.environ.get("WANDB_MODE", "online")
        return f"W&B project {self.project!r} ({mode})"

    def start(self, params: dict[str, str], config: dict[str, Any], previous: dict[str, Any] | None) -> dict:
        run_id = previous.get("run_id") if previous and previous.get("project") == self.project else None
        self.run = self.wandb.init(
            project=self.project, entity=self.entity, name=self.run_name, id=run_id,
            resume="allow" if run_id else None, dir=str(self.output_dir), config=config,
            settings=self.wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
        if run_id:
            self.run.config.update(config, allow_val_change=True)
        self.run.define_metric(self.STEP)
        self.run.define_metric("*", step_metric=self.STEP, step_sync=True)
        logger.info("W&B: %s run %s in project %r", "continuing" if run_id else "new", self.run.id, self.project)
        return {"run_id": self.run.id, "project": self.project}

    def log(self, points: list[tuple[int, float, dict[str, float]]]) -> None:
        for step, _, scalars in points:
            self.run.log({**scalars, self.STEP: step})

    def log_model(self, folder: Path) -> None:
        artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model")
        artifact.add_dir(str(folder))
        self.run.log_artifact(artifact, aliases=[folder.name, "latest"])

    def finish(self, succeeded: bool) -> None:
        self.run.finish(exit_code=0 if succeeded else 1)


_TRACKER_CLASSES: dict[str, type[Tracker]] = {"mlflow": MlflowTracker, "wandb": WandbTracker}
_STOP = object()


class _Sender:
    """One tracker's queue and sending thread. The thread owns the tracker: it starts the run, sends what the
    queue holds (all of it at once when it has fallen behind), uploads the model and ends the run."""

    def __init__(self, hub: TrackerHub, name: str):
        self.hub, self.name = hub, name
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_LIMIT)
        self.model_folder: Path | None = None
        self.succeeded = True
        self.failed: str | None = None  # why the tracker stopped taking figures
        self.sent = self.not_sent = 0  # scalar points
        self.dropped_flushes = 0
        self.tracker: Tracker | None = None
        self.thread = threading.Thread(target=self._run, name=f"tsm-tracker-{name}", daemon=True)

    def put(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:  # the tracker fell QUEUE_LIMIT flushes behind: drop the newest, count it
            self.dropped_flushes += 1
            self.not_sent += len(item[2])

    def _fail(self, what: str, error: BaseException) -> None:
        if self.failed is None:
            self.failed = f"{what}: {type(error).__name__}: {error}"
            where = self.tracker.where() if self.tracker else self.name
            logger.warning("Tracker %s failed (%s); training goes on without it, its figures are in "
                           "TensorBoard and training.log. %s", self.name, where, self.failed)

    def _run(self) -> None:
        try:
            self.tracker = _TRACKER_CLASSES[self.name](self.hub.settings, self.hub.run_name, self.hub.output_dir)
            previous = self.hub.previous.get(self.name)
            self.hub.record(self.name, self.tracker.start(self.hub.params, self.hub.config, previous))
        except Exception as error:
            self._fail("could not start its run", error)
        while True:
            items = [self.queue.get()]
            while not self.queue.empty() and items[-1] is not _STOP:
                items.append(self.queue.get_nowait())
            stop = items[-1] is _STOP
            points = [item for item in items if item is not _STOP]
            count = sum(len(scalars) for _, _, scalars in points)
            if self.failed is not None:
                self.not_sent += count
            elif points:
                try:
                    self.tracker.log(points)
                    self.sent += count
                except Exception as error:
                    self.not_sent += count
                    self._fail("could not take figures", error)
            if stop:
                break
        self._finish()

    def _finish(self) -> None:
        if self.failed is not None:
            return
        try:
            if self.model_folder is not None and self.tracker.takes_artifacts:
                self.tracker.log_model(self.model_folder)
            self.tracker.finish(self.succeeded)
        except Exception as error:
            self._fail("could not take the final model or end its run", error)


class TrackerHub:
    """Rank 0's experiment trackers (report_to minus tensorboard), fed without blocking the training thread."""

    def __init__(self, settings: MonitorConfig, output_dir: Path, config: dict[str, Any]):
        self.settings = settings
        self.output_dir = Path(output_dir)
        self.config = config
        self.params = flatten_config(config)
        self.run_name = settings.tracker_run_name or "/".join(self.output_dir.resolve().parts[-2:])
        self.previous = read_tracker_runs(self.output_dir)
        self._record_lock = threading.Lock()
        self.senders = [_Sender(self, name) for name in settings.report_to if name in EXTERNAL_TRACKERS]
        self.closed = False
        for sender in self.senders:
            sender.thread.start()
        if self.senders:
            atexit.register(self._close_at_exit)  # a leg that ends by an exception (preemption) still flushes

    @staticmethod
    def check_installed(settings: MonitorConfig) -> None:
        """A tracker named in report_to whose package is missing stops the run before any work."""
        missing = [name for name in settings.report_to
                   if name in EXTERNAL_TRACKERS and importlib.util.find_spec(EXTERNAL_TRACKERS[name]) is None]
        if missing:
            raise ConfigError(f"report_to names {', '.join(missing)} but the package is not installed: "
                              f"pip install 'tsm[trackers]' (or {' '.join(EXTERNAL_TRACKERS[m] for m in missing)}),"
                              " or remove it from report_to")

    def __bool__(self) -> bool:
        return bool(self.senders)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Queue one log step's scalars for every tracker; returns at once."""
        if scalars and not self.closed:
            point = (step, time.time(), dict(scalars))
            for sender in self.senders:
                sender.put(point)

    def record(self, name: str, info: dict[str, Any]) -> None:
        """Keep a tracker's run id in the run folder, for the next leg."""
        with self._record_lock:
            runs = read_tracker_runs(self.output_dir)
            runs[name] = info
            write_text(self.output_dir / TRACKER_RUNS, json.dumps(runs, indent=2) + "\n")

    def close(self, model_folder: Path | None = None, succeeded: bool = True,
              timeout_s: float | None = None) -> None:
        """Send what is queued, upload `model_folder`, end the runs; waits at most `timeout_s` (the config's
        tracker_timeout_s) for all trackers together, then says what was not sent and returns."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self._close_at_exit)
        deadline = time.monotonic() + (self.settings.tracker_timeout_s if timeout_s is None else timeout_s)
        for sender in self.senders:
            sender.model_folder, sender.succeeded = model_folder, succeeded
            try:  # a full queue makes room as the thread sends; a thread stuck on the network never does
                sender.queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
        for sender in self.senders:
            sender.thread.join(max(0.0, deadline - time.monotonic()))
            self._report(sender)

    def _report(self, sender: _Sender) -> None:
        if sender.thread.is_alive():
            logger.warning("Tracker %s did not finish within %.0f s (tracker_timeout_s): stopped waiting; %d scalar "
                           "points sent so far, the rest and the final model may be missing there",
                           sender.name, self.settings.tracker_timeout_s, sender.sent)
        elif sender.failed is not None or sender.not_sent:
            logger.warning("Tracker %s: %d scalar points sent, %d not sent%s (all are in TensorBoard)%s",
                           sender.name, sender.sent, sender.not_sent,
                           f", {sender.dropped_flushes} log steps dropped while it fell behind"
                           if sender.dropped_flushes else "", f"; {sender.failed}" if sender.failed else "")
        else:
            logger.info("Tracker %s: %d scalar points sent%s", sender.name, sender.sent,
                        ", final model uploaded" if sender.model_folder is not None else "")

    def _close_at_exit(self) -> None:
        self.close(succeeded=False, timeout_s=min(60.0, self.settings.tracker_timeout_s))
