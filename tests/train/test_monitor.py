"""Training monitor: the pure helpers on crafted series, the monitor on crafted numbers, a 2-rank
reduction over gloo, and a short real run read back from training.log and TensorBoard.

The trainer, the test corpus helpers and TensorBoard's reader are imported inside the tests that use them:
the 2-rank test's spawned processes import this module, and should not pay for transformers and datasets.
"""

from __future__ import annotations

import logging
import math
import re
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tsm.config import MonitorConfig, TrainConfig
from tsm.data.batches import CorpusStats
from tsm.train.health import (
    BOX_WIDTH,
    AlertLog,
    Downsampled,
    Ema,
    GradExplosionDetector,
    HealthFigures,
    ThroughputDropDetector,
    bar,
    box,
    data_wait_alert,
    eta_seconds,
    flow,
    format_duration,
    format_rate,
    nonfinite_alert,
    percentile,
    render_health_report,
    sparkline,
    trend_per_1k_steps,
)
from tsm.train.monitor import TrainingMonitor, training_logging

# The per-step line as the acceptance check greps it.
LINE = re.compile(r"Step [0-9,]+/[0-9,]+ \| loss=[0-9.]+ \| ema=[0-9.]+ \| best=[0-9.]+ \| lr=[0-9.e+-]+ \| "
                  r"mem=.* \| [0-9.]+ stp/s \| [0-9.]+ smp/s \| eta=.* \| gnorm=[0-9.]+")


# --- sparklines, bars, boxes -----------------------------------------------------------------------

def test_sparkline_scales_from_min_to_max():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([7, 0]) == "█▁"
    assert sparkline([]) == ""


def test_sparkline_flat_nan_and_width():
    assert sparkline([3.0] * 5) == "▄" * 5  # flat: mid-height, not "lowest" or "highest"
    assert sparkline([1.0, math.nan, 2.0]) == "▁!█"
    assert sparkline([math.inf, math.nan]) == "!!"
    long = sparkline(list(range(1000)), width=40)
    assert len(long) == 40 and long[0] == "▁" and long[-1] == "█"
    assert list(long) == sorted(long)  # a rising series stays monotone after bucketing


def test_bar_and_box_fit_100_columns():
    assert bar(0.5, 10) == "█████░░░░░" and bar(2.0, 4) == "████" and bar(math.nan, 3) == "░░░"
    items = [f"item-{i} {'x' * (i % 7)}" for i in range(40)]
    lines = flow("LABEL", items)
    assert len(lines) > 1 and lines[0].startswith("LABEL") and lines[1].startswith(" " * 11)
    text = box("title", [lines, flow("OTHER", ["a" * 300])])
    assert all(len(line) == BOX_WIDTH <= 100 for line in text.splitlines())
    assert "a" * 300 not in text  # over-long items are cut, never wrapped past the frame


def test_health_report_renders_every_section_within_100_columns():
    rng = np.random.default_rng(0)
    losses = list(9.6 + np.exp(-np.arange(500) / 150) + rng.normal(0, 0.02, 500))
    figures = HealthFigures(
        step=1000, max_steps=200_000, run_elapsed_s=107.5, recent_steps=list(range(501, 1001)),
        recent_losses=losses, loss_history=losses[::10], ema_fast=9.7102, ema_slow=9.81, best_loss=9.6432,
        grad_norms=[1.2, 1.3, 0.9, 2.5], max_grad_norm=1.0, explosions=1, nonfinite_losses=0, nonfinite_norms=2,
        lrs=[1e-5 * i for i in range(1, 6)], memory_kind="GPU", memory_gb=[42.1, 40.0], memory_total_gb=80.0,
        peak_allocated_gb=39.5, gpu_util=[], steps_per_s=9.3, samples_per_s=7131.0,
        latencies_s=[0.1] * 98 + [0.2, 0.9], data_wait_share=0.008, eta_s=21170.0, samples_read=7_131_000,
        short_series_skipped=1204, total_series=200_000,
        benchmark=(800, {"wql": 0.891, "mase": 1.19, "m3/wql": 0.9, "m3/mase": 1.2}), benchmark_enabled=True,
        alert_counts={"grad_explosion": 1}, last_alert="ALERT [grad_explosion] step 990: grad norm 25 is " + "x" * 90,
    )
    text = render_health_report(figures)
    assert all(len(line) == BOX_WIDTH <= 100 for line in text.splitlines())
    for part in ("ema fast 9.7102", "trend -", "clipped 75.0% (> 1)", "non-finite: loss 0, grad 2",
                 "GPU 42.1/80GB", "53%", "max of 2 ranks (min 40.00GB)", "GPU util n/a (no NVML)",
                 "9.30 stp/s", "7131 smp/s", "p50 100ms", "p99 ", "data wait 0.8%", "eta 5h 52m",
                 "samples read 7,131,000", "short series skipped 1,204 of 200,000",
                 "at step 800:  wql 0.891  mase 1.19  (+2 per-dataset scores in TensorBoard)",
                 "grad_explosion x1", "last: ALERT [grad_explosion] step 990"):
        assert part in text, part
    assert figures.scalars()["grad/clip_rate_interval"] == 0.75


# --- numbers -----------------------------------------------------------------------------------------

def test_ema_is_bias_corrected_and_skips_nan():
    ema = Ema(span=9)  # alpha 0.2
    assert math.isnan(ema.value)
    ema.update(5.0)
    assert ema.value == pytest.approx(5.0)  # bias correction: the first value, not 0.2 x 5
    for _ in range(200):
        ema.update(5.0)
    assert ema.value == pytest.approx(5.0)
    ema.update(math.nan)
    ema.update(math.inf)
    assert ema.value == pytest.approx(5.0)
    ema.update(10.0)
    assert ema.value == pytest.approx(0.8 * 5.0 + 0.2 * 10.0)


def test_ema_fast_follows_a_drop_sooner_than_slow():
    fast, slow = Ema(10), Ema(100)
    for v in [10.0] * 300 + [5.0] * 20:
        fast.update(v)
        slow.update(v)
    assert fast.value < 6.0 < 8.0 < slow.value


def test_percentile_matches_numpy():
    values = list(np.random.default_rng(0).exponential(size=101))
    for q in (0, 10, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([4.0], 99) == 4.0 and math.isnan(percentile([], 50))


def test_eta_and_durations():
    assert eta_seconds(199_000, 9.4) == pytest.approx(21170.2, rel=1e-4)
    assert format_duration(eta_seconds(199_000, 9.4)) == "5h 52m"
    assert format_duration(500) == "8m 20s" and format_duration(7) == "7s"
    assert format_duration(3 * 86400 + 4 * 3600 + 59) == "3d 04h"
    assert eta_seconds(0, 0.0) == 0.0 and format_duration(eta_seconds(10, 0.0)) == "?"
    for rate in (0.004, 0.15, 9.3, 95.66, 7131.2):
        assert re.fullmatch(r"[0-9.]+", format_rate(rate))


def test_trend_per_1k_steps():
    steps = list(range(1000))
    falling = [10.0 - s / 1000 for s in steps]  # -1 per 1000 steps around a mean of 9.5
    assert trend_per_1k_steps(steps, falling) == pytest.approx(-1 / 9.5005, rel=1e-3)
    assert trend_per_1k_steps(steps, [3.0] * 1000) == pytest.approx(0.0)
    assert trend_per_1k_steps(steps[:3], [1.0, math.nan, 3.0]) == pytest.approx(1000 / 2)  # slope 1/step, mean 2
    assert math.isnan(trend_per_1k_steps([1], [1.0]))


def test_downsampled_keeps_the_shape_in_bounded_memory():
    series = Downsampled(width=30)
    for i in range(10_000):
        series.append(float(i))
    values = series.values()
    assert 30 <= len(values) < 60
    assert values == sorted(values) and values[0] < 200 and values[-1] > 9_000


# --- detectors -----------------------------------------------------------------------------------------

def test_grad_explosion_detector():
    det = GradExplosionDetector(factor=10, history=50, min_history=20)
    rng = np.random.default_rng(0)
    assert det.update(1, 100.0) is None  # no recent range yet: nothing to compare with
    assert all(det.update(s, float(v)) is None for s, v in enumerate(rng.uniform(0.8, 1.2, 30), start=2))
    assert det.update(40, 5.0) is None and det.update(41, math.nan) is None
    alert = det.update(42, 25.0)
    assert alert is not None and alert.kind == "grad_explosion" and alert.step == 42
    assert "25" in alert.message and "10x" in alert.message and "step 42" in str(alert)


def test_throughput_drop_detector():
    det = ThroughputDropDetector(share=0.5, min_history=3)
    assert det.update(10, 1.0) is None  # warm-up window: never the baseline
    assert [det.update(s, 10.0) for s in (20, 30, 40)] == [None] * 3
    assert det.update(50, 6.0) is None
    alert = det.update(60, 4.0)
    assert alert is not None and alert.step == 60 and "4 steps/s" in alert.message and "40%" in alert.message


def test_data_wait_and_nonfinite_alerts():
    assert data_wait_alert(100, 0.1, 0.2, 10) is None
    alert = data_wait_alert(100, 0.35, 0.2, 10)
    assert alert is not None and "35%" in alert.message and alert.step == 100
    assert nonfinite_alert("loss_nan", "loss", [1, 2], [1.0, 2.0]) is None
    alert = nonfinite_alert("loss_nan", "loss", [7, 8, 9], [1.0, math.nan, math.inf])
    assert alert.step == 8 and "nan" in alert.message and "2 of the last 3" in alert.message


def test_alert_log_cooldown_counts_repeats():
    log = AlertLog(cooldown_steps=100)
    nan_at = [nonfinite_alert("loss_nan", "loss", [s], [math.nan]) for s in (10, 20, 150)]
    assert [log.should_show(a) for a in nan_at] == [True, False, True]
    assert log.counts == {"loss_nan": 3}


# --- memory probe ----------------------------------------------------------------------------------

def test_memory_probe_gpu_path_without_nvml(monkeypatch):
    """On a GPU the probe reads the allocator and NVML; without pynvml it says n/a and stops asking."""
    from tsm.train import monitor as mon

    calls = []

    def no_nvml(device):
        calls.append(device)
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 42.1 * 2**30)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: 40 * 2**30)
    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    probe = mon.MemoryProbe(torch.device("cuda", 0))
    assert probe.kind == "GPU" and probe.total_gb == 80 and probe.used_gb() == pytest.approx(42.1)
    assert probe.peak_gb() == 40
    assert probe.gpu_utilization() == -1 and probe.gpu_utilization() == -1 and len(calls) == 1
    monkeypatch.setattr(torch.cuda, "utilization", lambda d: 97)
    assert mon.MemoryProbe(torch.device("cuda", 0)).gpu_utilization() == 97
    cpu = mon.MemoryProbe(torch.device("cpu"))
    assert cpu.kind == "RSS" and 0 < cpu.used_gb() < cpu.total_gb and cpu.gpu_utilization() == -1


# --- the monitor on crafted numbers (one process) -------------------------------------------------------

def stub_accelerator(rank: int = 0, world: int = 1, reduce=None):
    return SimpleNamespace(is_main_process=rank == 0, num_processes=world, process_index=rank,
                           device=torch.device("cpu"), reduce=reduce or (lambda t, reduction: t.clone()))


def stub_config(tmp_path: Path, **monitoring) -> TrainConfig:
    return TrainConfig(max_steps=40, log_steps=5, save_steps=1000, max_grad_norm=1.0, output_dir=str(tmp_path),
                       monitoring=MonitorConfig(health_report_interval=20, **monitoring))


STATS = [CorpusStats("corpus-a", total=1000, too_short=37, used=963, weight=1.0)]


def test_monitor_alerts_report_and_benchmark(tmp_path, caplog):
    with training_logging(tmp_path, True):
        logging.getLogger("tsm").addHandler(caplog.handler)
        from accelerate import Accelerator

        monitor = TrainingMonitor(Accelerator(cpu=True), tmp_path, stub_config(tmp_path, alert_cooldown_steps=5), STATS)
        for step in range(1, 41):
            loss = math.nan if step == 33 else 5.0 - step / 40
            norm = 50.0 if step == 30 else 0.5 + 0.01 * (step % 3)
            monitor.on_step(step, torch.tensor(loss), torch.tensor(norm), 1e-3, samples=8, data_wait_s=0.0)
            if step == 25:
                monitor.on_benchmark(25, {"wql": 0.891, "mase": 1.19})
        monitor.on_benchmark(40, {"wql": 0.85})  # evaluated at the last step: still in the closing report
        monitor.close()
        log = (tmp_path / "training.log").read_text()
        assert LINE.search(log)
        assert "ALERT [grad_explosion] step 30: grad norm 50" in log
        assert "ALERT [loss_nan] step 33: loss is nan" in log
        assert "Benchmark at step 25: wql=0.891  mase=1.19" in log
        assert log.count("Health report at step") == 2
        report = log[log.rindex("Health report at step 40"):]
        assert "at step 40:  wql 0.85" in report and "short series skipped 37 of 1,000" in report
        assert "non-finite: loss 1, grad 0" in report and "grad_explosion x1" in report
        assert "samples read 320" in report
        assert any(c in report for c in "▁▂▃▄▅▆▇█")
        assert all(len(line) <= 100 for line in report.splitlines()[1:])
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
        tags = set(events.Tags()["scalars"])
        assert {"benchmark/wql", "benchmark/mase", "grad/explosions_total", "data/short_series_skipped"} <= tags
        assert [e.value for e in events.Scalars("grad/explosions_total")] == [0, 1]
        wql = [(e.step, e.value) for e in events.Scalars("benchmark/wql")]
        assert wql == [(25, pytest.approx(0.891)), (40, pytest.approx(0.85))]


# --- two real ranks (gloo): one reduction gives rank 0 the mean loss, global samples, worst rank -----

def _rank_main(rank: int, port: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def all_reduce_sum(t: torch.Tensor, reduction: str) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    out = Path(tmp)
    with training_logging(out, rank == 0):
        cfg = stub_config(out).model_copy(update={"max_steps": 4, "log_steps": 4})
        monitor = TrainingMonitor(stub_accelerator(rank, 2, all_reduce_sum), out, cfg, STATS)
        monitor.memory.used_gb = lambda: 1.0 + 2.0 * rank  # rank 1 is the fuller one
        for step in range(1, 5):
            monitor.on_step(step, torch.tensor(1.0 + 2.0 * rank), torch.tensor(0.5), 1e-3, samples=8,
                            data_wait_s=0.0)
        monitor.close()
        dist.destroy_process_group()


@pytest.mark.e2e
def test_two_ranks_reduce_once_per_window(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_main, args=(port, str(tmp_path)), nprocs=2, join=True)
    log = (tmp_path / "training.log").read_text()
    line = next(line for line in log.splitlines() if "Step 4/4" in line)
    assert "loss=2.0000" in line and "mem=3.00/" in line and "gnorm=0.500" in line
    assert "samples read 64" in log  # 2 ranks x 4 steps x 8
    assert "max of 2 ranks (min 1.00GB)" in log


# --- a short real run -----------------------------------------------------------------------------------

def test_real_run_writes_line_report_and_tensorboard(tmp_path, corpus):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.conftest import tiny_config
    from tsm.train.loop import train

    out = tmp_path / "run"
    train(tiny_config(corpus, out, max_steps=12, log_steps=2, save_steps=5,
                      **{"monitoring.health_report_interval": 6}))
    log = (out / "training.log").read_text()
    lines = [line for line in log.splitlines() if "| loss=" in line]
    assert len(lines) == 6 and all(LINE.search(line) for line in lines)
    assert log.count("Health report at step") == 2
    for section in ("LOSS", "GRADIENTS", "LR", "MEMORY", "THROUGHPUT", "DATA", "BENCHMARK", "ALERTS"):
        assert f"│ {section}" in log
    assert "step p50" in log and "short series skipped 0 of 64" in log and "off (benchmark_config is not set)" in log
    assert all(len(line) <= 100 for line in log.splitlines() if line.startswith(("│", "╭", "╰", "├")))
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "grad/norm", "perf/steps_per_s", "perf/samples_per_s",
            "train/loss_ema_fast", "train/loss_ema_slow", "grad/clip_rate", "perf/data_wait_share",
            "perf/eta_hours", "perf/memory_gb", "perf/step_time_p99_ms", "data/samples_read",
            "data/read_rate", "train/loss_variance"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4, 6, 8, 10, 12]
    assert [e.step for e in events.Scalars("perf/step_time_p50_ms")] == [6, 12]
    assert events.Scalars("data/samples_read")[-1].value == 12 * 8
    # The padding share: the run's padding tokens over its tokens, as its batches count them.
    from tsm.train.loop import open_training_data

    cfg = tiny_config(corpus, out, max_steps=12)
    counts = [open_training_data(cfg, 16, 0).batch_and_tokens(k)[1] for k in range(12)]
    share = sum(c[0] for c in counts) / sum(c[1] for c in counts)
    assert 0 < share < 1
    assert events.Scalars("data/padding_share")[-1].value == pytest.approx(share, rel=1e-6)
    assert f"padding {share:.1%} of tokens" in log
    assert "config" in str(events.Tags()["tensors"])
