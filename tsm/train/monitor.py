"""What a person watching a run sees: the per-step line, the boxed health report, alerts, `training.log`
and the scalars, which go to TensorBoard and the trackers of `report_to` (tsm.train.trackers) through one
method, `_scalar`, so that no figure reaches one and not the other. The monitor also drives `profile_steps`
(tsm.train.profiling).

Cost model: `on_step` only appends the step's tensors and host timings to lists. Every `log_steps` (and at
each health report) the window is flushed with ONE reduction over ranks, which is also the only point where
the host waits for the device; only rank 0 then computes, logs and writes TensorBoard.

Step latencies are host wall time between optimizer steps (checkpoint saves and evaluations left out). On a
GPU the host may run ahead of the device between flushes, which smooths the percentiles; window rates stay
exact because windows end after the device sync.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch

from tsm.config import TrainConfig
from tsm.data.batches import CorpusStats
from tsm.layout import TENSORBOARD, TRAINING_LOG
from tsm.train.health import (
    AlertLog,
    Downsampled,
    Ema,
    GradExplosionDetector,
    HealthFigures,
    RecentRate,
    ThroughputDropDetector,
    data_wait_alert,
    eta_seconds,
    finite,
    format_duration,
    format_gb,
    format_rate,
    mean_or_nan,
    nonfinite_alert,
    percentile,
    render_health_report,
)
from tsm.train.profiling import StepProfiler
from tsm.train.trackers import TrackerHub

logger = logging.getLogger("tsm")

__all__ = ["TrainingMonitor", "training_logging", "format_duration"]


@contextlib.contextmanager
def training_logging(output_dir: Path, is_main: bool) -> Iterator[None]:
    """Rank 0 logs INFO to stderr and `training.log`; other ranks only warnings. The `tsm` logger is put back
    as it was afterwards, so a second run in the same process (a notebook, a test) logs to its own folder
    and the caller's logging (pytest's capture) sees tsm's records again."""
    root = logging.getLogger("tsm")
    saved = root.handlers[:], root.propagate, root.level
    root.handlers.clear()
    root.propagate = False
    root.setLevel(logging.INFO if is_main else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(output_dir / TRAINING_LOG)
        file.setFormatter(fmt)
        root.addHandler(file)
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.propagate = saved[0], saved[1]
        root.setLevel(saved[2])


class MemoryProbe:
    """GPU memory held by torch's allocator (what an OOM is about) on CUDA; process RSS elsewhere."""

    def __init__(self, device: torch.device):
        self.device = device
        self.on_gpu = device.type == "cuda"
        if self.on_gpu:
            self.kind = "GPU"
            self.total_gb = torch.cuda.get_device_properties(device).total_memory / 2**30
        else:
            self.kind = "RSS"
            self.total_gb = psutil.virtual_memory().total / 2**30
        self._process = psutil.Process(os.getpid())
        self._nvml_ok = self.on_gpu

    def used_gb(self) -> float:
        if self.on_gpu:
            return torch.cuda.memory_reserved(self.device) / 2**30
        return self._process.memory_info().rss / 2**30

    def peak_gb(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.on_gpu else math.nan

    def gpu_utilization(self) -> float:
        """Percent busy over NVML's last sample period, or -1 without a GPU or without pynvml."""
        if not self._nvml_ok:
            return -1.0
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # no pynvml / nvidia-ml-py, or NVML unavailable: stop asking
            self._nvml_ok = False
            return -1.0


def _norm_tensor(norm, device: torch.device) -> torch.Tensor:
    """clip_grad_norm_ gives a tensor, a DTensor under FSDP2, or a float under some engines."""
    if norm is None:
        return torch.tensor(math.nan, device=device)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm.detach().float().reshape(()) if torch.is_tensor(norm) else torch.tensor(float(norm), device=device)


@dataclass
class _Window:
    """What each rank gathers between two flushes; tensors stay on the device until the flush."""

    started: float
    steps: list[int] = field(default_factory=list)
    losses: list[torch.Tensor] = field(default_factory=list)
    norms: list = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    samples: int = 0
    padding_tokens: int = 0
    tokens: int = 0
    data_wait_s: float = 0.0


@dataclass
class _Interval:
    """Rank 0's figures since the last health report (already reduced over ranks)."""

    started: float
    steps: int = 0
    samples: float = 0.0
    norms: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    data_wait_s: float = 0.0


# One reduction carries each rank's own figures in its own slot of a world-sized block, so summing gives
# rank 0 every rank's value (for the max memory and the worst data wait) without a second collective.
_SLOT_FIELDS = ("data_wait_s", "memory_gb", "gpu_util")


class TrainingMonitor:
    def __init__(self, accelerator, output_dir: Path, cfg: TrainConfig, data_stats: list[CorpusStats]):
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        self.device = accelerator.device
        self.max_steps = cfg.max_steps
        self.log_steps = cfg.log_steps
        self.save_steps = cfg.save_steps
        self.max_grad_norm = cfg.max_grad_norm
        self.settings = s = cfg.monitoring
        self.data_stats = data_stats
        self.memory = MemoryProbe(self.device)
        self.writer = None
        self.trackers: TrackerHub | None = None
        self._tracker_points: dict[int, dict[str, float]] = {}  # step -> scalars not yet queued for the trackers
        if self.is_main and "tensorboard" in s.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(output_dir / TENSORBOARD))
            self.writer.add_text("config", "```yaml\n" + cfg.to_yaml() + "\n```", 0)
        TrackerHub.check_installed(s)  # on every rank: one rank stopping alone would leave the others waiting
        if self.is_main:
            self.trackers = TrackerHub(s, output_dir, cfg.model_dump(mode="json")) or None
        self.profiler = StepProfiler(s.profile_steps, output_dir, self.rank, self.device)
        now = time.perf_counter()
        self._run_started = now
        self._window = _Window(started=now)
        self._interval = _Interval(started=now)
        self._last_flushed = self._last_reported = 0
        self._last_flushed_at = now
        self._last_step_at: float | None = None  # the first step's latency includes warm-up: not counted
        self._skip_next_latency = False
        # rank 0's running state
        self.ema_fast, self.ema_slow = Ema(s.loss_ema_fast_steps), Ema(s.loss_ema_slow_steps)
        self.best_loss = math.inf
        self.recent_losses: deque[tuple[int, float]] = deque(maxlen=s.health_report_interval)
        self.loss_history, self.lr_history = Downsampled(), Downsampled()
        self.last_logged_loss: float | None = None  # the last log window's mean loss (the run's summary)
        self.rate = RecentRate()
        self.explosions = GradExplosionDetector(s.grad_explosion_factor)
        self.throughput = ThroughputDropDetector(s.throughput_drop_share)
        self.alerts = AlertLog(s.alert_cooldown_steps)
        self.samples_read = 0.0
        self.padding_tokens = self.tokens = 0.0
        self.nonfinite_losses = self.nonfinite_norms = 0
        self.benchmark: tuple[int, dict[str, float]] | None = None
        self.validation: tuple[int, dict[str, float]] | None = None
        self.validation_start: dict[str, float] | None = None
        self.benchmark_enabled = getattr(cfg, "benchmark_config", None) is not None
        self._last_memory: list[float] = [0.0]
        self._last_util: list[float] = []

    # --- called by the loop -----------------------------------------------------------------------

    def before_step(self, step: int) -> None:
        """Just before optimizer step `step` starts (profile_steps begins here)."""
        self.profiler.before_step(step)

    def on_step(self, step: int, loss: torch.Tensor, grad_norm, lr: float, samples: int,
                data_wait_s: float = 0.0, tokens: tuple[int, int] = (0, 0)) -> None:
        """One step's figures; `tokens` is (padding tokens, all tokens) of its batches."""
        now = time.perf_counter()
        w = self._window
        if self._last_step_at is not None and not self._skip_next_latency:
            w.latencies.append(now - self._last_step_at)
        self._last_step_at = now
        # The loop saves a checkpoint right after this call on save steps: the next interval is not a step.
        self._skip_next_latency = step % self.save_steps == 0
        w.steps.append(step)
        w.losses.append(loss.detach())
        w.norms.append(grad_norm)
        w.lrs.append(lr)
        w.samples += samples
        w.padding_tokens += tokens[0]
        w.tokens += tokens[1]
        w.data_wait_s += data_wait_s
        if self.profiler.after_step(step):
            self._skip_next_latency = True  # writing the trace is not a step's time
        if step % self.log_steps == 0 or step % self.settings.health_report_interval == 0 or step >= self.max_steps:
            self._flush(step)

    def on_benchmark(self, step: int, scores: dict[str, float]) -> None:
        """Benchmark scores measured during training: logged, in TensorBoard and in the next health report."""
        self.benchmark = (step, dict(scores))
        self._on_evaluation("benchmark", "Benchmark", step, scores)

    def on_validation(self, step: int, scores: dict[str, float]) -> None:
        """Validation loss and WQL: logged, in TensorBoard (`validation/`) and in the next health report."""
        self.validation = (step, dict(scores))
        if step == 0:
            self.validation_start = dict(scores)
        self._on_evaluation("validation", "Validation", step, scores)

    def _on_evaluation(self, tag: str, title: str, step: int, scores: dict[str, float]) -> None:
        self._skip_next_latency = True  # the evaluation's time is not a training step's
        if self.is_main:
            logger.info("%s at step %s: %s", title, f"{step:,}",
                        "  ".join(f"{name}={value:.6g}" for name, value in scores.items()))
            for name, value in scores.items():  # a non-finite score too: the report shows it, not a gap
                self._scalar(f"{tag}/{name}", value, step, keep_nonfinite=True)
            self._send_to_trackers()

    def close(self) -> None:
        """Flush what is left and, on rank 0, write the closing health report. It comes here rather than at
        the last step so that a benchmark evaluated at the last step is in it."""
        if self._window.steps:
            self._flush(self._window.steps[-1])
        if self.is_main and self._last_flushed and self._last_reported != self._last_flushed:
            self._health_report(self._last_flushed, self._last_flushed_at)  # an evaluation after it is no step
        self.profiler.finish()  # a leg that ended inside profile_steps writes what it recorded
        self._send_to_trackers()
        if self.writer is not None:
            self.writer.close()

    def finish(self, final_model: Path | None) -> None:
        """After the final model folder is written: the trackers upload it, take what is queued and end their
        runs (waiting at most tracker_timeout_s)."""
        if self.trackers is not None:
            self._send_to_trackers()
            self.trackers.close(final_model)

    # --- flush: one reduction, then rank 0 only ---------------------------------------------------

    def _flush(self, step: int) -> None:
        w = self._window
        losses, norms, (samples, padding_tokens, tokens), slots = self._reduce(w)
        # Windows meet right after the reduction: it waits for the device, so on a GPU the host's run-ahead
        # is charged to the window whose work it was, and no time falls between windows.
        now = time.perf_counter()
        self._window = _Window(started=now)
        if not self.is_main:
            return
        self.padding_tokens += padding_tokens
        self.tokens += tokens
        self._record_window(step, w, losses, norms, samples, slots, now - w.started, now, tokens)
        if step % self.settings.health_report_interval == 0 and step < self.max_steps:  # the last one: close()
            self._health_report(step, now)
        self._last_flushed, self._last_flushed_at = step, now
        self._send_to_trackers()

    def _reduce(self, w: _Window) -> tuple[list[float], list[float], list[float], list[list[float]]]:
        """Losses and norms (means over ranks), (samples, padding tokens, tokens) summed, each rank's slots."""
        n = len(w.losses)
        slots = torch.zeros(self.world, len(_SLOT_FIELDS))
        slots[self.rank] = torch.tensor([w.data_wait_s, self.memory.used_gb(), self.memory.gpu_utilization()])
        counts = [float(w.samples), float(w.padding_tokens), float(w.tokens)]
        host = torch.cat([torch.tensor(counts), slots.flatten()]).to(self.device, non_blocking=True)
        losses = torch.stack([loss.float().reshape(()) for loss in w.losses])
        norms = torch.stack([_norm_tensor(g, self.device) for g in w.norms])
        total = self.accelerator.reduce(torch.cat([losses, norms, host]), reduction="sum").tolist()
        first_slot = 2 * n + len(counts)
        per_rank = [total[first_slot + r * len(_SLOT_FIELDS):first_slot + (r + 1) * len(_SLOT_FIELDS)]
                    for r in range(self.world)]
        return ([v / self.world for v in total[:n]], [v / self.world for v in total[n:2 * n]],
                total[2 * n:first_slot], per_rank)

    def _record_window(self, step: int, w: _Window, losses: list[float], norms: list[float], samples: float,
                       slots: list[list[float]], elapsed: float, now: float, tokens: float = 0.0) -> None:
        good_norms = finite(norms)
        loss_mean = sum(losses) / len(losses)  # NaN when any step was NaN: the line must show it
        worst_wait = max(r[0] for r in slots)  # the slowest-fed rank
        self._update_running_state(w, losses, good_norms, loss_mean, samples, slots, worst_wait, step, now)
        wait_share = worst_wait / elapsed if elapsed > 0 else 0.0
        steps_per_s, samples_per_s = len(w.steps) / elapsed, samples / elapsed
        self._check_alerts(step, w, losses, norms, wait_share)
        gnorm = mean_or_nan(good_norms)
        eta = eta_seconds(self.max_steps - step, self._recent_rate(steps_per_s))
        memory = max(self._last_memory)
        if step % self.log_steps == 0 or step >= self.max_steps:
            logger.info(
                "Step %s/%s | loss=%.4f | ema=%.4f | best=%.4f | lr=%.2e | mem=%s | %s stp/s | %.0f smp/s | eta=%s"
                " | gnorm=%.3f", f"{step:,}", f"{self.max_steps:,}", loss_mean, self.ema_fast.value, self.best_loss,
                w.lrs[-1], format_gb(memory, self.memory.total_gb), format_rate(steps_per_s), samples_per_s,
                format_duration(eta), gnorm,
            )
        for name, value in (
            ("train/loss", loss_mean), ("train/loss_ema_fast", self.ema_fast.value),
            ("train/loss_ema_slow", self.ema_slow.value), ("train/best_loss", self.best_loss),
            ("train/lr", w.lrs[-1]), ("grad/norm", gnorm), ("grad/norm_max", max(good_norms, default=math.nan)),
            ("grad/clip_rate", sum(n > self.max_grad_norm for n in good_norms) / max(len(good_norms), 1)),
            ("grad/nonfinite_total", self.nonfinite_norms), ("train/nonfinite_total", self.nonfinite_losses),
            ("perf/steps_per_s", steps_per_s), ("perf/samples_per_s", samples_per_s),
            ("perf/tokens_per_s", tokens / elapsed if tokens else math.nan),
            ("perf/data_wait_share", wait_share), ("perf/eta_hours", eta / 3600),
            ("perf/memory_gb", memory), ("perf/memory_share", memory / self.memory.total_gb),
            ("perf/gpu_util", mean_or_nan(self._last_util)),
            ("perf/gpu_util_min", min(self._last_util, default=math.nan)),
            ("data/samples_read", self.samples_read), ("data/padding_share", self.padding_share),
        ):
            self._scalar(name, value, step)

    def _update_running_state(self, w: _Window, losses: list[float], good_norms: list[float], loss_mean: float,
                              samples: float, slots: list[list[float]], worst_wait: float, step: int,
                              now: float) -> None:
        for s, loss in zip(w.steps, losses, strict=True):
            self.ema_fast.update(loss)
            self.ema_slow.update(loss)
            self.recent_losses.append((s, loss))
        if math.isfinite(loss_mean):
            self.best_loss = min(self.best_loss, loss_mean)
            self.loss_history.append(loss_mean)
            self.last_logged_loss = loss_mean
        self.lr_history.append(w.lrs[-1])
        self.nonfinite_losses += len(losses) - len(finite(losses))
        self.nonfinite_norms += len(w.norms) - len(good_norms)
        self.samples_read += samples
        self.rate.mark(now, step)
        self._last_memory = [r[1] for r in slots]
        self._last_util = [r[2] for r in slots if r[2] >= 0]  # ranks without NVML report -1
        iv = self._interval
        iv.steps += len(w.steps)
        iv.samples += samples
        iv.norms.extend(good_norms)
        iv.latencies.extend(w.latencies)
        iv.data_wait_s += worst_wait

    def _check_alerts(self, step: int, w: _Window, losses: list[float], norms: list[float],
                      wait_share: float) -> None:
        found = [nonfinite_alert("loss_nan", "loss", w.steps, losses),
                 nonfinite_alert("grad_nonfinite", "grad norm", w.steps, norms)]
        found += [self.explosions.update(s, n) for s, n in zip(w.steps, norms, strict=True)]
        if w.latencies:  # median step time: one checkpoint-slow step is not a drop
            found.append(self.throughput.update(step, 1.0 / max(percentile(w.latencies, 50), 1e-9)))
        found.append(data_wait_alert(step, wait_share, self.settings.data_wait_alert_share, len(w.steps)))
        for alert in found:
            if alert is not None and self.alerts.should_show(alert):
                logger.warning("%s", alert)

    @property
    def padding_share(self) -> float:
        """The share of the run's tokens (context patches, output patches) that were only padding."""
        return self.padding_tokens / self.tokens if self.tokens else math.nan

    def _recent_rate(self, fallback: float) -> float:
        rate = self.rate.steps_per_s
        return rate if math.isfinite(rate) else fallback  # one log point so far: the window's own rate

    def _scalar(self, tag: str, value: float, step: int, keep_nonfinite: bool = False) -> None:
        """The one way a scalar leaves the monitor: TensorBoard now, the trackers at the end of the flush."""
        if not (keep_nonfinite or math.isfinite(value)):
            return
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)
        if self.trackers is not None:
            self._tracker_points.setdefault(step, {})[tag] = float(value)

    def _send_to_trackers(self) -> None:
        """Queue the flush's scalars for the trackers (a queue put per step: the step never waits on them)."""
        if self.trackers is not None:
            for step, scalars in self._tracker_points.items():
                self.trackers.log(step, scalars)
        self._tracker_points = {}

    # --- the health report ------------------------------------------------------------------------

    def _health_report(self, step: int, now: float) -> None:
        iv = self._interval
        elapsed = max(now - iv.started, 1e-9)
        figures = HealthFigures(
            step=step, max_steps=self.max_steps, run_elapsed_s=now - self._run_started,
            recent_steps=[s for s, _ in self.recent_losses], recent_losses=[v for _, v in self.recent_losses],
            loss_history=self.loss_history.values(), ema_fast=self.ema_fast.value, ema_slow=self.ema_slow.value,
            best_loss=self.best_loss, grad_norms=iv.norms, max_grad_norm=self.max_grad_norm,
            explosions=self.alerts.counts.get("grad_explosion", 0), nonfinite_losses=self.nonfinite_losses,
            nonfinite_norms=self.nonfinite_norms, lrs=self.lr_history.values(), memory_kind=self.memory.kind,
            memory_gb=self._last_memory, memory_total_gb=self.memory.total_gb,
            peak_allocated_gb=self.memory.peak_gb() if self.memory.on_gpu else None,
            gpu_util=self._last_util if self.memory.on_gpu else None,
            steps_per_s=iv.steps / elapsed, samples_per_s=iv.samples / elapsed, latencies_s=iv.latencies,
            data_wait_share=iv.data_wait_s / elapsed,
            eta_s=eta_seconds(self.max_steps - step, self._recent_rate(iv.steps / elapsed)),
            samples_read=self.samples_read, padding_share=self.padding_share,
            short_series_skipped=sum(s.too_short for s in self.data_stats),
            total_series=sum(s.total for s in self.data_stats), benchmark=self.benchmark,
            benchmark_enabled=self.benchmark_enabled, validation=self.validation,
            validation_start=self.validation_start,
            alert_counts=dict(self.alerts.counts),
            last_alert=str(self.alerts.recent[-1]) if self.alerts.recent else None,
        )
        # The first line carries the log prefix; the box starts on its own line so it keeps its width.
        logger.info("Health report at step %s\n%s", f"{step:,}", render_health_report(figures))
        for name, value in figures.scalars().items():
            self._scalar(name, value, step)
        self._interval = _Interval(started=now)
        self._last_reported = step



