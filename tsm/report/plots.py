"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot global state) and
returned as base64 PNG data URIs to embed in the HTML."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from tsm.report.runfiles import BASELINE, Scalars, StageRun

STAGE_COLORS = {"stage1": "#1f77b4", "stage2": "#d62728", "finetune": "#2ca02c"}
OTHER_COLORS = ("#9467bd", "#8c564b", "#17becf", "#bcbd22")
BASELINE_COLOR = "#7f7f7f"
NONFINITE_COLOR = "#c0392b"
NONFINITE_LABEL = "not finite (inf or NaN)"
FORECAST_COLOR = "#1f77b4"
_RC = {"font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.grid": True, "grid.alpha": 0.3,
       "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 9, "legend.frameon": False}


def color_for(name: str, index: int = 0) -> str:
    if name == BASELINE:
        return BASELINE_COLOR
    return STAGE_COLORS.get(name, OTHER_COLORS[index % len(OTHER_COLORS)])


def plot_style():
    """The report's matplotlib settings, scoped (a context manager) so callers' rcParams stay untouched."""
    import matplotlib

    return matplotlib.rc_context(_RC)


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def to_data_uri(figure: Figure, dpi: int = 110) -> str:
    buffer = io.BytesIO()
    # No "Software" text chunk: it carries a URL, and the file promises no external references.
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# ---------------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------------

# (panel title, y label, tag drawn solid per stage)
_PANELS = (
    ("Training loss", "loss", "train/loss"),
    ("Learning rate", "learning rate", "train/lr"),
    ("Gradient norm", "L2 norm", "grad/norm"),
    ("Throughput", "samples / s", "perf/samples_per_s"),
)
EMA_PREFIX = "train/loss_ema"
EMA_STYLES = ("--", ":", "-.")


def stage_offsets(stages: Sequence[StageRun]) -> dict[str, int]:
    """Stages run back to back: each one's steps start where the previous one ended."""
    offsets, total = {}, 0
    for stage in stages:
        offsets[stage.name] = total
        total += stage.steps or 0
    return offsets


def training_curves(stages: Sequence[StageRun]) -> Figure | None:
    """2x2 panels (loss with its EMAs, learning rate, grad norm, throughput), every stage in its colour;
    one legend above the panels, so that no legend hides a curve."""
    if not any(stage.scalars for stage in stages):
        return None
    offsets = stage_offsets(stages)
    ema_tags = sorted({t for s in stages for t in s.scalars if t.startswith(EMA_PREFIX)})
    figure = new_figure(11, 6.8)
    axes = figure.subplots(2, 2, sharex=True).ravel()
    for ax, (title, ylabel, tag) in zip(axes, _PANELS, strict=True):
        for index, stage in enumerate(stages):
            if tag in stage.scalars:
                _plot_scalars(ax, stage.scalars[tag], offsets[stage.name], color_for(stage.name, index))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if not ax.has_data():
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center", va="center", color="gray")
    for index, stage in enumerate(stages):
        for tag, style in zip(ema_tags, EMA_STYLES, strict=False):
            if tag in stage.scalars:
                _plot_scalars(axes[0], stage.scalars[tag], offsets[stage.name], color_for(stage.name, index),
                              linestyle=style, linewidth=1.6, marker=None, alpha=0.85)
    _mark_clip_threshold(axes[2], stages)
    for ax in axes:
        _mark_stage_starts(ax, stages, offsets)
    axes[1].yaxis.set_major_formatter(FuncFormatter(lambda value, _: "0" if value == 0 else f"{value:.1e}"))
    for ax in axes[2:]:
        ax.set_xlabel("optimizer step (stages back to back)")
    handles = [Line2D([], [], color=color_for(s.name, i), linewidth=2, label=s.name) for i, s in enumerate(stages)]
    handles += [Line2D([], [], color="dimgray", linestyle=style, linewidth=1.6, label=tag.removeprefix("train/"))
                for tag, style in zip(ema_tags, EMA_STYLES, strict=False)]
    figure.legend(handles=handles, loc="outside upper center", ncol=len(handles))
    return figure


def _plot_scalars(ax: Axes, scalars: Scalars, offset: int, color: str, label: str | None = None, **style) -> None:
    """Every logged point; a non-finite value is a gap in the line (NaN), never a point at infinity."""
    style = {"linewidth": 1.3, "marker": "o" if len(scalars.steps) < 30 else None, "markersize": 3, **style}
    values = np.where(np.isfinite(scalars.values), scalars.values, np.nan)
    ax.plot(scalars.steps + offset, values, color=color, label=label, **style)


def nonfinite_points(stages: Sequence[StageRun], prefix: str) -> list[tuple[str, str, int, float]]:
    """(stage, tag, step, value) of every logged value of the tags under `prefix` that is inf or NaN."""
    return [(stage.name, tag, int(step), float(value))
            for stage in stages for tag, scalars in sorted(stage.scalars.items()) if tag.startswith(prefix)
            for step, value in zip(scalars.steps, scalars.values, strict=True) if not np.isfinite(value)]


def _mark_nonfinite(ax: Axes, scalars: Scalars, offset: int) -> None:
    """A red cross at the top of the panel above each step whose value is not finite, with its value."""
    bad = ~np.isfinite(scalars.values)
    if not bad.any():
        return
    steps, at_top = scalars.steps[bad] + offset, ax.get_xaxis_transform()  # x in steps, y in axes fraction
    ax.plot(steps, np.full(len(steps), 0.95), transform=at_top, linestyle="none", marker="X", markersize=9,
            color=NONFINITE_COLOR, label=NONFINITE_LABEL, clip_on=False)
    for step, value in zip(steps, scalars.values[bad], strict=True):
        ax.annotate(str(float(value)), (step, 0.95), xycoords=at_top, xytext=(7, -3), textcoords="offset points",
                    fontsize=8, color=NONFINITE_COLOR)


def _mark_clip_threshold(ax: Axes, stages: Sequence[StageRun]) -> None:
    thresholds = {s.config.get("max_grad_norm") for s in stages} - {None}
    for threshold in thresholds:
        ax.axhline(float(threshold), color="gray", linestyle="--", linewidth=1)
        ax.annotate(f"clip at {threshold:g}", (0.01, float(threshold)), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=8, color="gray")


def _mark_stage_starts(ax: Axes, stages: Sequence[StageRun], offsets: dict[str, int]) -> None:
    for stage in stages[1:]:
        ax.axvline(offsets[stage.name], color="black", linestyle=":", linewidth=1)


def benchmark_curves(stages: Sequence[StageRun]) -> Figure | None:
    """Relative scores logged during training (`benchmark/relative_*` tags), if any stage has them."""
    return _evaluation_curves(stages, "benchmark/relative", "model / seasonal naive", baseline=True)


def validation_curves(stages: Sequence[StageRun]) -> Figure | None:
    """Validation loss and WQL logged during training (`validation/*` tags; step 0 scores the start)."""
    return _evaluation_curves(stages, "validation/", "validation score (lower is better)", baseline=False)


def _evaluation_curves(stages: Sequence[StageRun], prefix: str, ylabel: str, baseline: bool) -> Figure | None:
    tags = sorted({t for s in stages for t in s.scalars if t.startswith(prefix)})
    if not tags:
        return None
    offsets = stage_offsets(stages)
    figure = new_figure(11, 3.4)
    axes = np.atleast_1d(figure.subplots(1, len(tags), sharex=True, squeeze=False).ravel())
    for ax, tag in zip(axes, tags, strict=True):
        for index, stage in enumerate(stages):
            if tag in stage.scalars:
                _plot_scalars(ax, stage.scalars[tag], offsets[stage.name], color_for(stage.name, index),
                              stage.name)
                _mark_nonfinite(ax, stage.scalars[tag], offsets[stage.name])
        if baseline:
            ax.axhline(1.0, color=BASELINE_COLOR, linestyle="--", linewidth=1, label="seasonal naive = 1")
        name = tag.split("/", 1)[1].replace("_", " ")  # relative wql; validation: wql, loss
        ax.set_title(f"{name if baseline else 'validation ' + name} during training")
        ax.set_xlabel("optimizer step (stages back to back)")
        ax.set_ylabel(ylabel)
        _mark_stage_starts(ax, stages, offsets)
    legend = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    figure.legend(legend.values(), legend.keys(), loc="outside upper center", ncol=len(legend))
    return figure


# ---------------------------------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------------------------------


def relative_wql_bars(results: pd.DataFrame) -> Figure | None:
    """Per dataset, each model's WQL / seasonal naive's WQL as grouped horizontal bars."""
    if BASELINE not in set(results["model"]):
        return None
    table = results.pivot_table(index="dataset", columns="model", values="WQL", sort=False)
    models = [m for m in results["model"].unique() if m != BASELINE]
    if not models:
        return None
    # A baseline WQL of 0 (all-zero targets) gives inf: leave that bar out rather than break the axis.
    ratios = table[models].div(table[BASELINE], axis=0).replace([np.inf, -np.inf], np.nan)
    datasets = list(ratios.index)
    height = 0.8 / len(models)
    figure = new_figure(11, 1.4 + 0.42 * len(datasets) * max(1, len(models) / 2))
    ax = figure.subplots()
    positions = np.arange(len(datasets))
    for index, model in enumerate(models):
        offsets = positions - 0.4 + height * (index + 0.5)
        ax.barh(offsets, ratios[model], height=height * 0.92, color=color_for(model, index), label=model)
    ax.axvline(1.0, color="black", linewidth=1.2, linestyle="--", label="seasonal naive = 1")
    ax.set_yticks(positions, datasets)
    ax.invert_yaxis()
    ax.set_xlabel("WQL relative to seasonal naive (lower is better)")
    ax.set_title("Relative WQL per dataset")
    ax.grid(axis="y", visible=False)
    handles, labels = ax.get_legend_handles_labels()
    order = [*range(1, len(handles)), 0]  # the models first, then the baseline's line
    figure.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside upper center",
                  ncol=len(models) + 1)
    return figure


# ---------------------------------------------------------------------------------------------------
# Forecasts
# ---------------------------------------------------------------------------------------------------


@dataclass
class FanPanel:
    """One scored window: the context shown, the truth, and the forecast quantiles (levels, horizon)."""

    title: str
    context: np.ndarray
    truth: np.ndarray
    low: np.ndarray
    median: np.ndarray
    high: np.ndarray


def fan_chart(title: str, panels: Sequence[FanPanel], band: str = "10-90%") -> Figure:
    """One row of panels: context and truth in black, median forecast and its band in blue."""
    figure = new_figure(11, 3.5)
    axes = figure.subplots(1, len(panels), squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=True):
        past = np.arange(-len(panel.context), 0)
        future = np.arange(len(panel.truth))
        # The truth line starts at the last context point so that the series reads as one line.
        truth_x = np.concatenate([past[-1:], future])
        truth_y = np.concatenate([panel.context[-1:], panel.truth])
        ax.plot(past, panel.context, color="black", linewidth=1.2, label="history")
        ax.plot(truth_x, truth_y, color="black", linewidth=1.2, linestyle="--", label="truth")
        ax.fill_between(future, panel.low, panel.high, color=FORECAST_COLOR, alpha=0.25, linewidth=0,
                        label=f"{band} band")
        ax.plot(future, panel.median, color=FORECAST_COLOR, linewidth=1.8, label="median forecast")
        ax.axvline(-0.5, color="gray", linewidth=0.8, linestyle=":")
        ax.set_title(panel.title, fontsize=10, fontweight="normal")
        ax.set_xlabel("steps from forecast start")
        ax.yaxis.set_major_formatter(FuncFormatter(compact_number))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # steps are whole numbers
    axes[0].set_ylabel("value")
    figure.suptitle(title, fontweight="bold", fontsize=12)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4)
    return figure


# ---------------------------------------------------------------------------------------------------
# Rule run times
# ---------------------------------------------------------------------------------------------------


def rule_time_bars(rules: pd.DataFrame) -> Figure:
    figure = new_figure(11, 0.8 + 0.36 * len(rules))
    ax = figure.subplots()
    positions = np.arange(len(rules))
    ax.barh(positions, rules["seconds"], color="#4c72b0")
    for y, seconds in zip(positions, rules["seconds"], strict=True):
        ax.text(seconds, y, f" {format_seconds(seconds)}", va="center", fontsize=9)
    ax.set_yticks(positions, rules["rule"])
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.set_title("Wall time per rule")
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.12)
    return figure


def compact_number(value: float, _position: object = None) -> str:
    """Axis tick text without matplotlib's offset label (which collides with titles): 1.2M, 35k, 0.25."""
    magnitude = abs(value)
    for threshold, divisor, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if magnitude >= threshold:
            return f"{value / divisor:.3g}{suffix}"
    return f"{value:.4g}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds):
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
