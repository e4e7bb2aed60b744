"""What keeps a week-long run alive: finding where to resume, refusing to mix runs, preemption signals,
steps with non-finite numbers, and a disk check before each checkpoint.

Exit status 75 (EX_TEMPFAIL) means "preempted, checkpoint written: run me again"; the next run of the
same command resumes from the newest valid checkpoint by itself.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml

from tsm.config import ConfigError, TrainConfig, TsmError
from tsm.layout import CONFIG_COPY, FINAL_CHECKPOINT, RESOLVED_CONFIG, list_checkpoints
from tsm.train.checkpoint import missing_checkpoint_files

logger = logging.getLogger("tsm")

# Keys that may change between the legs of one run (how long, how often, where to log), unlike the
# model, data and optimisation settings that define it.
RUN_NEUTRAL_KEYS = {
    "max_steps", "save_steps", "save_total_limit", "log_steps", "resume_from_checkpoint", "output_dir",
    "dataloader_num_workers", "monitoring", "health_report_interval", "benchmark_config",
    "benchmark_datasets_root", "benchmark_eval_steps", "benchmark_batch_size", "benchmark_top_k",
    "benchmark_checkpoint_metric", "benchmark_composite_weights", "max_consecutive_bad_steps",
    "parallelism",
}


class Preempted(TsmError):
    """Raised after the preemption checkpoint is written; the CLI exits with tsm.launch.PREEMPTED_EXIT_CODE."""


def is_valid_checkpoint(path: Path) -> bool:
    return not missing_checkpoint_files(path)


def run_differences(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """The run-defining keys whose values differ; a key the saved run predates counts as its default."""
    now = current.model_dump(mode="json")
    keys = (set(saved) | set(now)) - RUN_NEUTRAL_KEYS
    fields = TrainConfig.model_fields
    defaults = {k: fields[k].get_default(call_default_factory=True) for k in keys - set(saved) if k in fields}
    return sorted(k for k in keys if saved.get(k, defaults.get(k)) != now.get(k))


def find_resume_checkpoint(cfg: TrainConfig) -> Path | None:
    """For resume_from_checkpoint: auto. The newest valid checkpoint of this same run in output_dir, or None
    for a fresh start. An output_dir that holds a different run is an error: nothing is overwritten."""
    output_dir = Path(cfg.output_dir)
    checkpoints = list_checkpoints(output_dir)
    saved_config = output_dir / RESOLVED_CONFIG
    if saved_config.is_file():
        differences = run_differences(yaml.safe_load(saved_config.read_text()) or {}, cfg)
        if differences:
            raise ConfigError(
                f"output_dir {output_dir} holds another run (its {RESOLVED_CONFIG} differs in: "
                f"{', '.join(differences)}). Choose a new output_dir, or delete the old run's folder; resuming it "
                "with a different config would mix two runs."
            )
    elif checkpoints or (output_dir / FINAL_CHECKPOINT).exists():
        raise ConfigError(f"output_dir {output_dir} holds checkpoints but no {RESOLVED_CONFIG}: not a tsm run "
                          "this one can continue. Choose a new output_dir.")
    for _, path in reversed(checkpoints):
        if is_valid_checkpoint(path):
            return path
        logger.warning("Skipping %s: incomplete or damaged checkpoint (missing files)", path)
    return None


def check_same_architecture(checkpoint: Path, cfg: TrainConfig) -> None:
    """A checkpoint resumed under a config whose model block describes another architecture is refused."""
    copy = checkpoint / CONFIG_COPY
    if not copy.is_file() or not cfg.random_init:
        return
    saved = (yaml.safe_load(copy.read_text()) or {}).get("model", {})
    now = cfg.model.model_dump(mode="json")
    differs = sorted(k for k in now if k in saved and saved[k] != now[k])
    if differs:
        raise ConfigError(
            f"resume_from_checkpoint {checkpoint}: the checkpoint's architecture differs from the config's model "
            f"block in {', '.join(f'{k} ({saved[k]} vs {now[k]})' for k in differs)}. Resume with the config the "
            "checkpoint was trained with, or start a new run from it with --no-random-init --model-id."
        )


def check_disk_space(output_dir: Path, model: torch.nn.Module, world_size: int) -> None:
    """Refuse to start a checkpoint that cannot fit: weights twice (HF folder + sharded state), Adam's two
    moments, with 20% headroom; per rank, the shards of the sharded state."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    params *= world_size if any(type(p).__name__ == "DTensor" for p in model.parameters()) else 1
    needed = int(params * 4 * 1.2)
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise TsmError(
            f"not enough disk for a checkpoint in {output_dir}: about {needed / 2**30:.2f} GiB needed, "
            f"{free / 2**30:.2f} GiB free. Free space or lower save_total_limit; the last checkpoint is intact."
        )


class PreemptionHandler:
    """SIGTERM / SIGUSR1 (SLURM sends them before killing a job) set a flag; the loop finishes its step,
    checkpoints and exits 75. Several ranks agree without a device sync or a wait: each step starts an
    all-reduce of the flag on a CPU (gloo) group and reads the one started a step before, so every rank
    stops after the same step, one step after the signal. A context manager around the steps."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, num_processes: int = 1) -> None:
        self.received: int | None = None
        self._previous = {}
        # new_group is collective: every rank builds its handler at the same point of train().
        self._group = dist.new_group(backend="gloo") if num_processes > 1 else None
        self._in_flight: tuple[Any, torch.Tensor] | None = None
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            logger.warning("Received %s: finishing this step, then checkpointing and exiting",
                           signal.Signals(signum).name)

    def should_stop(self) -> bool:
        if self._group is None:
            return self.received is not None
        flag = torch.tensor([float(self.received is not None)])
        stop = False
        if self._in_flight is not None:
            work, agreed = self._in_flight
            work.wait()  # posted a step ago on every rank: done, or nearly
            stop = bool(agreed > 0)
        self._in_flight = (dist.all_reduce(flag, group=self._group, async_op=True), flag)
        return stop

    def __enter__(self) -> PreemptionHandler:
        return self

    def __exit__(self, error: type[BaseException] | None, *_: Any) -> None:
        """Signals go back to their handlers; after the last step, the last all-reduce (every rank posted it) is
        waited for. A signal during the export after the last step is noted and ignored: the run is finishing."""
        if error is None and self._in_flight is not None:
            self._in_flight[0].wait()
        self._in_flight = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class BadStepGuard:
    """A step whose gradient norm is NaN or inf (from a NaN/inf loss or gradient) skips the optimizer update
    on the device: fused AdamW's `found_inf` leaves weights, moments and step count as they were, so the
    step needs no host sync. `settle()` reads the flags when the host syncs anyway (every `settle_every` steps,
    checkpoints, the end): each skipped step is counted and logged, and `limit` of them in a row stop the run."""

    def __init__(self, limit: int, settle_every: int):
        self.limit = limit
        self.settle_every = settle_every  # steps: the log steps' interval, when the monitor syncs anyway
        self.consecutive = 0
        self.total = 0
        self._pending: list[tuple[int, torch.Tensor]] = []  # (step, [skipped, loss, grad norm]) not yet read

    def found_inf(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """1.0 (skip the update) or 0.0, on the device, for the optimizer's `found_inf`."""
        norm = grad_norm.detach().float().reshape(())
        skip = (~torch.isfinite(norm)).float()
        self._pending.append((step, torch.stack([skip, loss.detach().float().reshape(()), norm])))
        if len(self._pending) >= self.settle_every:
            self.settle()
        return skip

    def settle(self) -> None:
        """Count and log the skipped steps so far (one host sync); raises when `limit` came in a row."""
        if not self._pending:
            return
        steps = [step for step, _ in self._pending]
        flags = torch.stack([values for _, values in self._pending]).tolist()
        self._pending.clear()
        for step, (skipped, loss, norm) in zip(steps, flags, strict=True):
            if not skipped:
                self.consecutive = 0
                continue
            self.consecutive += 1
            self.total += 1
            what = "gradient" if math.isfinite(loss) else "loss"
            logger.warning("Step %d: non-finite %s (loss %.6g, grad norm %.6g): optimizer step skipped "
                           "(%d in a row, %d in all)", step, what, loss, norm, self.consecutive, self.total)
            if self.consecutive >= self.limit:
                raise TsmError(
                    f"stopped at step {step}: {self.consecutive} consecutive steps with non-finite loss or "
                    f"gradients (max_consecutive_bad_steps={self.limit}). The last good checkpoint is intact; look "
                    "for inf or huge values in the data (tsm data check) or lower the learning rate."
                )
