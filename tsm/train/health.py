"""Pure helpers behind the training monitor: smoothing, statistics, detectors and text rendering.

Nothing here touches torch, the accelerator or the clock, so every piece is testable on crafted series.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SPARK_CHARS = "▁▂▃▄▅▆▇█"
MISSING_CHAR = "!"  # a bucket with no finite value (NaN/inf loss) must stand out, not vanish
BOX_WIDTH = 96  # fits a 100-column terminal; log lines' timestamp prefix sits on the title line only


# --- numbers --------------------------------------------------------------------------------------


def finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


class Ema:
    """Exponential moving average over `span` steps (alpha = 2 / (span + 1)), bias-corrected like Adam's
    moments so early values are a weighted mean of what was seen rather than pulled toward the first value
    or zero. Non-finite values are skipped: one NaN step must not poison the average for the rest of the run."""

    def __init__(self, span: float):
        self.beta = 1.0 - 2.0 / (span + 1.0)
        self._moment = 0.0
        self._power = 1.0

    def update(self, value: float) -> None:
        if math.isfinite(value):
            self._moment = self.beta * self._moment + (1.0 - self.beta) * value
            self._power *= self.beta

    @property
    def value(self) -> float:
        return self._moment / (1.0 - self._power) if self._power < 1.0 else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def variance(values: Sequence[float]) -> float:
    return statistics.pvariance(values) if len(values) > 1 else 0.0


def trend_per_1k_steps(steps: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of value over step, as a fraction of the mean value per 1000 steps.
    Negative means the loss is falling; near zero over a long window means a plateau."""
    pairs = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
    if len(pairs) < 2:
        return math.nan
    mean_s = sum(s for s, _ in pairs) / len(pairs)
    mean_v = sum(v for _, v in pairs) / len(pairs)
    spread = sum((s - mean_s) ** 2 for s, _ in pairs)
    if spread == 0 or mean_v == 0:
        return math.nan
    slope = sum((s - mean_s) * (v - mean_v) for s, v in pairs) / spread
    return slope * 1000.0 / abs(mean_v)


def eta_seconds(remaining_steps: int, steps_per_s: float) -> float:
    if remaining_steps <= 0:
        return 0.0
    return remaining_steps / steps_per_s if steps_per_s > 0 else math.inf


class RecentRate:
    """Steps/s over the last `points` log points: smooth enough for an ETA, recent enough to follow a
    slowdown, and it includes checkpoint saves and evaluations because they recur for the rest of the run."""

    def __init__(self, points: int = 50):
        self._marks: deque[tuple[float, int]] = deque(maxlen=points + 1)

    def mark(self, time_s: float, step: int) -> None:
        self._marks.append((time_s, step))

    @property
    def steps_per_s(self) -> float:
        if len(self._marks) < 2:
            return math.nan
        (t0, s0), (t1, s1) = self._marks[0], self._marks[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else math.nan


class Downsampled:
    """A whole-run series in bounded memory: pairs of buckets merge whenever there are 2 x `width` of them,
    so a million-step run keeps at most 2 x `width` means and a sparkline of it costs nothing."""

    def __init__(self, width: int = 60):
        self.width = width
        self.per_bucket = 1
        self._sums: list[float] = []
        self._counts: list[int] = []

    def append(self, value: float) -> None:
        if self._counts and self._counts[-1] < self.per_bucket:
            self._sums[-1] += value
            self._counts[-1] += 1
        else:
            self._sums.append(value)
            self._counts.append(1)
        if len(self._sums) >= 2 * self.width:
            self._sums = [a + b for a, b in zip(self._sums[::2], self._sums[1::2], strict=True)]
            self._counts = [a + b for a, b in zip(self._counts[::2], self._counts[1::2], strict=True)]
            self.per_bucket *= 2

    def values(self) -> list[float]:
        return [s / c for s, c in zip(self._sums, self._counts, strict=True)]


# --- text -----------------------------------------------------------------------------------------


def _bucket_means(values: Sequence[float], width: int) -> list[float]:
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        chunk = finite(values[i * len(values) // width:(i + 1) * len(values) // width])
        out.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return out


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """One character per value (bucket means when there are more values than `width`), scaled between the
    finite minimum and maximum. A flat series draws mid-height; non-finite buckets draw `!`."""
    points = _bucket_means(values, width)
    good = finite(points)
    if not good:
        return MISSING_CHAR * len(points)
    low, high = min(good), max(good)
    top = len(SPARK_CHARS) - 1
    chars = []
    for v in points:
        if not math.isfinite(v):
            chars.append(MISSING_CHAR)
        elif high == low:
            chars.append(SPARK_CHARS[top // 2])
        else:
            chars.append(SPARK_CHARS[round((v - low) / (high - low) * top)])
    return "".join(chars)


def bar(fraction: float, width: int = 24) -> str:
    fraction = min(max(fraction, 0.0), 1.0) if math.isfinite(fraction) else 0.0
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d {h:02d}h"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s" if m else f"{s}s"


def format_rate(per_s: float) -> str:
    """Three significant figures without an exponent (the log line is grepped as `[0-9.]+ stp/s`)."""
    if not math.isfinite(per_s):
        return "0"
    if per_s >= 100:
        return f"{per_s:.0f}"
    if per_s >= 10:
        return f"{per_s:.1f}"
    return f"{per_s:.2f}" if per_s >= 0.1 else f"{per_s:.3f}"


def format_gb(used: float, total: float) -> str:
    return f"{used:.2f}/{total:.0f}GB" if used < 10 else f"{used:.1f}/{total:.0f}GB"


def flow(label: str, items: Sequence[str], width: int = BOX_WIDTH - 4, label_width: int = 11,
         sep: str = "  ") -> list[str]:
    """Lay `items` out after `label`, `sep` apart, wrapping onto indented lines at `width` columns."""
    rows: list[str] = []
    current = ""
    for item in items:
        if current and label_width + len(current) + len(sep) + len(item) > width:
            rows.append(current)
            current = item
        else:
            current = f"{current}{sep}{item}" if current else item
    rows.append(current)
    return [((label if i == 0 else "").ljust(label_width) + row)[:width] for i, row in enumerate(rows)]


def box(title: str, sections: Sequence[list[str]], width: int = BOX_WIDTH) -> str:
    """Lines framed by box-drawing characters, `width` columns wide; sections are separated by a rule."""
    inner = width - 4
    head = f"─ {title} "
    out = ["╭" + head + "─" * max(0, width - 2 - len(head)) + "╮"]
    for i, section in enumerate(sections):
        if i:
            out.append("├" + "─" * (width - 2) + "┤")
        out.extend(f"│ {line[:inner].ljust(inner)} │" for line in section)
    out.append("╰" + "─" * (width - 2) + "╯")
    return "\n".join(out)


# --- detectors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    kind: str  # loss_nan, grad_explosion, throughput_drop, data_wait
    step: int
    message: str

    def __str__(self) -> str:
        return f"ALERT [{self.kind}] step {self.step:,}: {self.message}"


def nonfinite_alert(kind: str, what: str, steps: Sequence[int], values: Sequence[float]) -> Alert | None:
    bad = [(s, v) for s, v in zip(steps, values, strict=True) if not math.isfinite(v)]
    if not bad:
        return None
    first_step, first_value = bad[0]
    more = f" ({len(bad)} of the last {len(values)} steps)" if len(bad) > 1 else ""
    return Alert(kind, first_step, f"{what} is {first_value}{more}")


class GradExplosionDetector:
    """A grad norm `factor` times above the median of the recent finite norms. The median ignores the odd
    spike, so one explosion does not raise the bar for the next; a sustained new level becomes the norm."""

    def __init__(self, factor: float, history: int = 200, min_history: int = 20):
        self.factor = factor
        self.min_history = min_history
        self._recent: deque[float] = deque(maxlen=history)

    def update(self, step: int, norm: float) -> Alert | None:
        if not math.isfinite(norm):
            return None  # counted as non-finite, not as an explosion
        alert = None
        if len(self._recent) >= self.min_history:
            median = statistics.median(self._recent)
            if median > 0 and norm > self.factor * median:
                alert = Alert("grad_explosion", step, f"grad norm {norm:.4g} is {norm / median:.1f}x the median "
                              f"{median:.4g} of the last {len(self._recent)} steps (alert above {self.factor:g}x)")
        self._recent.append(norm)
        return alert


class ThroughputDropDetector:
    """Steps/s of a log window below `share` of the median of the previous windows. Fed the window's median
    step latency, so a single slow step (a checkpoint save) does not read as a drop; the first window
    (warm-up, allocator growth) never enters the baseline."""

    def __init__(self, share: float, history: int = 20, min_history: int = 3):
        self.share = share
        self.min_history = min_history
        self._recent: deque[float] = deque(maxlen=history)
        self._seen_first = False

    def update(self, step: int, steps_per_s: float) -> Alert | None:
        if not math.isfinite(steps_per_s) or steps_per_s <= 0:
            return None
        if not self._seen_first:
            self._seen_first = True
            return None
        alert = None
        if len(self._recent) >= self.min_history:
            baseline = statistics.median(self._recent)
            if steps_per_s < self.share * baseline:
                alert = Alert("throughput_drop", step, f"{steps_per_s:.3g} steps/s is {steps_per_s / baseline:.0%} "
                              f"of the recent median {baseline:.3g} (alert below {self.share:.0%})")
        self._recent.append(steps_per_s)
        return alert


def data_wait_alert(step: int, share: float, limit: float, window_steps: int) -> Alert | None:
    if not math.isfinite(share) or share <= limit:
        return None
    return Alert("data_wait", step, f"waiting for data took {share:.0%} of the last {window_steps} steps' time "
                 f"(alert above {limit:.0%}): add dataloader workers or faster storage")


class AlertLog:
    """Each kind of alert at most once per `cooldown_steps`; repeats are counted, not printed, so a run
    stuck in NaNs does not bury everything else in the log."""

    def __init__(self, cooldown_steps: int):
        self.cooldown = cooldown_steps
        self._last_shown: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.recent: deque[Alert] = deque(maxlen=5)

    def should_show(self, alert: Alert) -> bool:
        self.counts[alert.kind] = self.counts.get(alert.kind, 0) + 1
        self.recent.append(alert)
        last = self._last_shown.get(alert.kind)
        if last is not None and alert.step - last < self.cooldown:
            return False
        self._last_shown[alert.kind] = alert.step
        return True


# --- the boxed health report --------------------------------------------------------------------------


@dataclass
class HealthFigures:
    """Everything one health report shows, already reduced over ranks (rank 0 fills it in)."""

    step: int
    max_steps: int
    run_elapsed_s: float
    recent_steps: list[int]  # per-step losses of the last report interval
    recent_losses: list[float]
    loss_history: list[float]  # the whole run, downsampled
    ema_fast: float
    ema_slow: float
    best_loss: float
    grad_norms: list[float]  # finite norms since the last report
    max_grad_norm: float
    explosions: int
    nonfinite_losses: int
    nonfinite_norms: int
    lrs: list[float]  # the schedule so far, downsampled
    memory_kind: str  # "GPU" or "RSS"
    memory_gb: list[float]  # per rank
    memory_total_gb: float
    peak_allocated_gb: float | None  # GPU only
    gpu_util: list[float] | None  # per rank with NVML; None without a GPU
    steps_per_s: float
    samples_per_s: float
    latencies_s: list[float]
    data_wait_share: float
    eta_s: float
    samples_read: float
    short_series_skipped: int
    total_series: int
    benchmark: tuple[int, dict[str, float]] | None
    benchmark_enabled: bool
    alert_counts: dict[str, int]
    last_alert: str | None
    validation: tuple[int, dict[str, float]] | None = None  # the latest validation scores
    validation_start: dict[str, float] | None = None  # the starting model's (step 0), when it was scored
    padding_share: float = math.nan  # of the run's tokens, from left-padding contexts to a batch's longest

    @property
    def clip_rate(self) -> float:
        return sum(n > self.max_grad_norm for n in self.grad_norms) / max(len(self.grad_norms), 1)

    @property
    def latency_ms(self) -> dict[int, float]:
        return {q: percentile(self.latencies_s, q) * 1000 for q in (50, 90, 99)}

    @property
    def loss_variance(self) -> float:
        return variance(finite(self.recent_losses))

    @property
    def loss_trend(self) -> float:
        return trend_per_1k_steps(self.recent_steps, self.recent_losses)

    def scalars(self) -> dict[str, float]:
        """The report's own figures for TensorBoard (the per-window ones are written every log step)."""
        lat = self.latency_ms
        return {
            "train/loss_variance": self.loss_variance, "train/loss_trend_per_1k_steps": self.loss_trend,
            "grad/clip_rate_interval": self.clip_rate, "grad/explosions_total": self.explosions,
            "perf/step_time_p50_ms": lat[50], "perf/step_time_p90_ms": lat[90], "perf/step_time_p99_ms": lat[99],
            "perf/data_wait_share_interval": self.data_wait_share,
            "data/short_series_skipped": self.short_series_skipped, "data/read_rate": self.samples_per_s,
        }


def _ms(milliseconds: float) -> str:
    return f"{milliseconds:.0f}ms" if milliseconds >= 10 else f"{milliseconds:.2f}ms"


def mean_or_nan(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _loss_section(f: HealthFigures) -> list[str]:
    good = finite(f.recent_losses)
    var, mean = f.loss_variance, mean_or_nan(good)
    spread = f"var {var:.3g} (cv {math.sqrt(var) / abs(mean):.1%})" if good and mean else f"var {var:.3g}"
    low, high = min(good, default=math.nan), max(good, default=math.nan)
    last = f"last {f.recent_losses[-1]:.4f}" if f.recent_losses else "last ?"
    return (flow("LOSS", [last, f"ema fast {f.ema_fast:.4f}", f"ema slow {f.ema_slow:.4f}", f"best {f.best_loss:.4f}",
                          f"trend {f.loss_trend:+.1%}/1k steps", spread])
            + flow("", [sparkline(f.recent_losses, 48), f"last {len(f.recent_losses)} steps, {low:.4g}..{high:.4g}"])
            + flow("", [sparkline(f.loss_history, 48), "whole run"]))


def _grad_section(f: HealthFigures) -> list[str]:
    n = f.grad_norms
    return flow("GRADIENTS", [
        f"norm mean {mean_or_nan(n):.3g}", f"p50 {percentile(n, 50):.3g}", f"p90 {percentile(n, 90):.3g}",
        f"max {max(n, default=math.nan):.3g}", f"clipped {f.clip_rate:.1%} (> {f.max_grad_norm:g})",
        f"explosions {f.explosions}", f"non-finite: loss {f.nonfinite_losses}, grad {f.nonfinite_norms}"])


def _memory_section(f: HealthFigures) -> list[str]:
    used, total = max(f.memory_gb), f.memory_total_gb
    items = [f"{f.memory_kind} {format_gb(used, total)}", bar(used / total), f"{used / total:.0%}"]
    if len(f.memory_gb) > 1:
        items.append(f"max of {len(f.memory_gb)} ranks (min {min(f.memory_gb):.2f}GB)")
    if f.peak_allocated_gb is not None:
        items.append(f"peak allocated {f.peak_allocated_gb:.1f}GB")
    if f.gpu_util is not None:
        items.append(f"GPU util {mean_or_nan(f.gpu_util):.0f}% (NVML)" if f.gpu_util else "GPU util n/a (no NVML)")
    return flow("MEMORY", items)


def _benchmark_and_alerts(f: HealthFigures) -> list[str]:
    if f.benchmark is None:
        lines = flow("BENCHMARK", ["none yet" if f.benchmark_enabled else "off (benchmark_config is not set)"])
    else:
        step, scores = f.benchmark
        # Aggregates only: per-dataset scores ("m3_yearly/wql") would fill the box; TensorBoard has them.
        overall = [f"{k} {v:.4g}" for k, v in scores.items() if "/" not in k]
        per_dataset = len(scores) - len(overall)
        more = [f"(+{per_dataset} per-dataset scores in TensorBoard)"] if per_dataset else []
        lines = flow("BENCHMARK", [f"at step {step:,}:", *overall, *more])
    if f.validation is not None:
        step, scores = f.validation
        start = [f"(start: {k} {v:.4g})" for k, v in (f.validation_start or {}).items() if k == "wql"]
        lines += flow("VALIDATION", [f"at step {step:,}:", *(f"{k} {v:.4g}" for k, v in scores.items()), *start])
    lines += flow("ALERTS", [f"{kind} x{n}" for kind, n in sorted(f.alert_counts.items())] or ["none"])
    if f.last_alert:
        lines += flow("", ["last:", *f.last_alert.split()], sep=" ")  # a sentence: wrap at words
    return lines


def render_health_report(f: HealthFigures) -> str:
    lat = f.latency_ms
    lr = flow("LR", [f"{f.lrs[-1]:.2e}" if f.lrs else "?", f"peak {max(f.lrs, default=math.nan):.2e}",
                     sparkline(f.lrs, 40), "schedule so far"])
    perf = flow("THROUGHPUT", [
        f"{format_rate(f.steps_per_s)} stp/s", f"{f.samples_per_s:.0f} smp/s",
        f"step p50 {_ms(lat[50])} p90 {_ms(lat[90])} p99 {_ms(lat[99])}",
        f"data wait {f.data_wait_share:.1%}", f"eta {format_duration(f.eta_s)}"])
    data = flow("DATA", [f"samples read {f.samples_read:,.0f}",
                         f"short series skipped {f.short_series_skipped:,} of {f.total_series:,}",
                         f"read rate {f.samples_per_s:.0f} smp/s"]
                + ([f"padding {f.padding_share:.1%} of tokens"] if math.isfinite(f.padding_share) else []))
    title = f"step {f.step:,}/{f.max_steps:,} · {format_duration(f.run_elapsed_s)} elapsed"
    return box(title, [_loss_section(f) + _grad_section(f) + lr, _memory_section(f) + perf + data,
                       _benchmark_and_alerts(f)])
