"""GPU check (issues 13 and 26): the real training loop - `tsm.train.loop.train()` on the base configs, with its
loader, length grouping, bad-step guard, monitor and checkpoints - for a fixed number of steps, stage 1
(context 2048, from random init) then stage 2 (context 8192, from stage 1's final-checkpoint, on series long
enough to fill it).

Per stage: samples/s, tokens/s, peak GPU memory, padding share, and MFU over all tokens and over useful
(non-padding) tokens. FLOPs are counted per batch from the model's own architecture (StepFlops; equal to
torch.utils.flop_counter on a training step, tests/bench/test_gpu_flops.py); the batches are a function of
their index, so they are rebuilt here on the CPU after the run. Time: each window of LOG_STEPS steps, from one
log step's host sync to the next; a window in which dynamo compiled a graph is dropped (one recompile inside
it would read as a 10-30x lower MFU), and so is the first (loader and allocator warm-up); the figures are
medians over the kept windows. The stage-1 run also counts host-device syncs (torch.cuda.set_sync_debug_mode)
in the bodies of the steps between log steps.

  bash bench/gpu_check.sh                             # one H100/H200: about 4 minutes (README "First GPU run")
  bash bench/gpu_check.sh --stages 1 --set model.dropout_rate=0   # a variant, stage 1 only
  python bench/gpu_check.py --tiny --steps 30         # CPU smoke run of the same path (test config)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/gpu_check.py` puts bench/ on sys.path; the GPU machine has no tsm
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402

import tsm.train.loop as loop  # noqa: E402
from tsm.config import TrainConfig, load_config, parse_settings  # noqa: E402
from tsm.data.synth.corpus import generate, write_corpus  # noqa: E402
from tsm.train.monitor import TrainingMonitor  # noqa: E402
from tsm.train.parallel import compiled_graphs  # noqa: E402

STAGE2_CONFIG = REPO / "config/training/chronos2-base-stage2.yaml"
LOG_STEPS = 10
WARMUP_WINDOWS = 1  # loader workers and the allocator; windows that compiled are dropped besides
# Dense bf16 peaks (TFLOP/s), most specific name first: an "H200 NVL" (835) is not the SXM part (989).
BF16_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200 NVL", 835.0), ("H100", 989.0),
                    ("H200", 989.0), ("A100", 312.0)]


def peak_flops(device_name: str) -> float | None:
    return next((tf * 1e12 for key, tf in BF16_PEAK_TFLOPS if key in device_name), None)


class StepFlops:
    """Model FLOPs of one training step (forward + backward) on a batch, from the model's architecture (not
    the config: the stage-2 YAML has no model block). Counted as torch's FLOP counter counts, matmuls only:
    every Linear weight 6 x tokens it sees, except the input embedding's first layers, whose input gradient
    backward skips (4 x); time attention 12 x layers x heads x d_kv x tokens^2 per series; group attention
    12 x layers x heads x d_kv x tokens x the rows it attends over; RoPE's frequency matmul, forward only, once
    per batch."""

    def __init__(self, model: torch.nn.Module) -> None:
        def weights(module: torch.nn.Module) -> int:
            return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))

        embedding = model.input_patch_embedding
        self.embedding_data_side = weights(embedding.hidden_layer) + weights(embedding.residual_layer)
        self.embedding_rest = weights(embedding) - self.embedding_data_side
        self.encoder = weights(model.encoder)
        self.head = weights(model.output_patch_embedding)
        config = model.config
        self.layers, self.d_kv = config.num_layers, config.d_kv
        self.attention = 12 * config.num_layers * config.num_heads * config.d_kv
        self.patch = model.chronos_config.input_patch_size
        self.extra_tokens = 1 if model.chronos_config.use_reg_token else 0
        self.total_params = sum(p.numel() for p in model.parameters())

    def step(self, batch: dict, useful: bool) -> float:
        """FLOPs of `batch`; `useful`: as if each row had only its own context patches (no padding) and group
        attention spanned only its own group (torch's count spans all rows: the mask zeroes the rest)."""
        context = batch["context"]
        rows, width = context.shape
        out = int(batch["num_output_patches"])
        if useful:  # left padding is the leading NaN run of each row
            lengths = width - torch.isnan(context).int().argmin(dim=1)
            patches = torch.ceil(lengths / self.patch).double()
            groups = torch.bincount(batch["group_ids"])
            attended_rows = groups[batch["group_ids"]].double()
        else:
            patches = torch.full((rows,), math.ceil(width / self.patch), dtype=torch.float64)
            attended_rows = torch.full((rows,), float(rows), dtype=torch.float64)
        tokens = patches + self.extra_tokens + out
        embedded = patches + out  # the register token is a lookup
        linear = (4 * self.embedding_data_side + 6 * self.embedding_rest) * embedded + 6 * self.encoder * tokens
        linear = linear + 6 * self.head * out
        rope = self.layers * self.d_kv * float(tokens.max())  # one position table per batch
        return float((linear + self.attention * tokens**2 + self.attention * tokens * attended_rows).sum()) + rope


def base_config(stage: int, tiny: bool, overrides: dict) -> TrainConfig:
    name = "chronos2-test.yaml" if tiny else ("chronos2-base.yaml" if stage == 1 else "chronos2-base-stage2.yaml")
    values = {"log_steps": LOG_STEPS, "gradient_accumulation_steps": 1, "eval_steps": None,
              "dataloader_num_workers": min(8, max(1, (os.cpu_count() or 2) - 2)), **overrides}
    if tiny and stage == 2:
        values.update(random_init=False, context_length=1024)  # make_corpora's tiny stage-2 context
    return load_config(REPO / "config/training" / name, values)


@dataclass
class Window:
    first_step: int
    last_step: int
    seconds: float
    new_graphs: int  # graphs dynamo compiled during the window

    @property
    def steps(self) -> int:
        return self.last_step - self.first_step + 1


@dataclass
class WindowClock:
    """Times each window of `log_steps` steps between the monitor's log-step host syncs (the time after the
    monitor returns from a log step: its loss read has waited for the device), with the graphs compiled."""

    log_steps: int
    max_steps: int
    windows: list[Window] = field(default_factory=list)

    def __enter__(self) -> WindowClock:
        self._on_step = TrainingMonitor.on_step
        clock, on_step = self, self._on_step
        self._last: tuple[int, float, int] | None = None

        def timed(monitor, step, *args, **kwargs):
            result = on_step(monitor, step, *args, **kwargs)
            if step % clock.log_steps == 0 or step >= clock.max_steps:
                clock.mark(step)
            return result

        TrainingMonitor.on_step = timed
        self._start = (0, time.perf_counter(), compiled_graphs())
        return self

    def mark(self, step: int) -> None:
        now, graphs = time.perf_counter(), compiled_graphs()
        last_step, last_time, last_graphs = self._last or self._start
        self.windows.append(Window(last_step + 1, step, now - last_time, graphs - last_graphs))
        self._last = (step, now, graphs)

    def __exit__(self, *exc) -> None:
        TrainingMonitor.on_step = self._on_step


def kept_windows(windows: list[Window], warmup: int = WARMUP_WINDOWS) -> tuple[list[Window], int]:
    """The windows to measure: after `warmup`, and none in which a graph was compiled; and how many of the
    later windows were dropped for a compile."""
    later = windows[warmup:]
    kept = [w for w in later if w.new_graphs == 0]
    return kept, len(later) - len(kept)


class SyncCounter:
    """Host-device syncs (CUDA's sync debug warnings), each counted in the step whose body or hand-over it
    happened in: a step starts when train_step is called. (Counted from the monitor's hand-over instead, the
    bad-step guard's settle read in the body of every tenth step landed on the quiet step before it.)"""

    def __init__(self, cuda: bool = True) -> None:
        self.cuda = cuda
        self.events: list[tuple[str, int | None]] = []  # ("start" | "hand-over", step) or ("sync", None)

    def sync(self) -> None:
        self.events.append(("sync", None))

    def __enter__(self) -> SyncCounter:
        self._train_step, self._on_step, self._show = loop.train_step, TrainingMonitor.on_step, warnings.showwarning
        self._filters = list(warnings.filters)
        events, train_step, on_step, show = self.events, self._train_step, self._on_step, self._show

        def started(*args, **kwargs):
            events.append(("start", args[-1]))  # train_step(..., step)
            return train_step(*args, **kwargs)

        def handed_over(monitor, step, *args, **kwargs):
            events.append(("hand-over", step))
            return on_step(monitor, step, *args, **kwargs)

        def record(message, category, *rest, **kwargs):
            if "synchroniz" in str(message):
                self.sync()
            else:
                show(message, category, *rest, **kwargs)

        loop.train_step, TrainingMonitor.on_step = started, handed_over
        if self.cuda:
            warnings.showwarning = record
            warnings.simplefilter("always")  # every sync, not the first per line
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
        loop.train_step, TrainingMonitor.on_step, warnings.showwarning = (self._train_step, self._on_step,
                                                                         self._show)
        warnings.filters[:] = self._filters

    def syncs_by_step(self, marker: str = "start") -> collections.Counter:
        syncs: collections.Counter = collections.Counter()
        step = 0
        for kind, value in self.events:
            if kind == "sync":
                syncs[step] += 1
            elif kind == marker:
                step = value
        return syncs

    def quiet_step_syncs(self, max_steps: int, marker: str = "start") -> tuple[int, int]:
        """(syncs, steps) over the steps after the warm-up window that are not log steps."""
        syncs = self.syncs_by_step(marker)
        quiet = [s for s in range(WARMUP_WINDOWS * LOG_STEPS + 1, max_steps) if s % LOG_STEPS]
        return sum(syncs[s] for s in quiet), len(quiet)


def run_stage(stage: int, args: argparse.Namespace, corpus: Path, work: Path, model_id: str | None) -> dict:
    batch_size = args.batch_size_stage1 if stage == 1 else args.batch_size_stage2
    overrides = {"training_data_paths": [str(corpus)], "probability": None, "output_dir": str(work / f"stage{stage}"),
                 "max_steps": args.steps, "save_steps": 100 * args.steps, "per_device_train_batch_size": batch_size}
    if model_id is not None:
        overrides["model_id"] = model_id
    cfg = base_config(stage, args.tiny, {**overrides, **parse_settings(args.extra)})
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    counter = SyncCounter() if cuda and stage == 1 else None
    graphs_before = compiled_graphs()
    with WindowClock(LOG_STEPS, args.steps) as clock, counter or contextlib.nullcontext():
        final = loop.train(cfg)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    kept, dropped = kept_windows(clock.windows, args.warmup_windows)
    if not kept:
        raise SystemExit(f"stage {stage}: no window to measure: {len(clock.windows)} windows, {dropped} compiled a "
                         f"graph ({compiled_graphs() - graphs_before} graphs in all): run more --steps")
    # The measured steps' batches, rebuilt: step s trained on batch s - 1 (one micro-batch per step).
    from tsm.model import load_model

    model = load_model(str(final))
    flops = StepFlops(model)
    batches = loop.open_training_data(cfg, model.chronos_config.output_patch_size, rank=0)
    per_window = collections.defaultdict(list)
    padding_tokens = all_tokens = 0
    for window in kept:
        totals = collections.Counter()
        for step in range(window.first_step, window.last_step + 1):
            batch, (pad, tokens) = batches.batch_and_tokens(step - 1)
            totals.update(all=flops.step(batch, useful=False), useful=flops.step(batch, useful=True),
                          samples=batch["context"].shape[0], tokens=tokens)
            padding_tokens, all_tokens = padding_tokens + pad, all_tokens + tokens
        for name, value in totals.items():
            per_window[name].append(value / window.seconds)
        per_window["steps"].append(window.steps / window.seconds)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_flops(name)
    median = {name: statistics.median(values) for name, values in per_window.items()}
    result = {"stage": stage, "context": cfg.context_length, "batch": batch_size, "params": flops.total_params,
              "steps_per_s": median["steps"], "samples_per_s": median["samples"], "tokens_per_s": median["tokens"],
              "padding": padding_tokens / all_tokens, "peak_gb": peak_gb, "tflops": median["all"] / 1e12,
              "mfu": median["all"] / peak if peak else math.nan,
              "mfu_useful": median["useful"] / peak if peak else math.nan,
              "flops_per_series": median["all"] / median["samples"], "final": str(final),
              "windows": (len(kept), len(clock.windows), dropped), "graphs": compiled_graphs() - graphs_before}
    if counter is not None:
        result["syncs"] = counter.quiet_step_syncs(args.steps)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help=f"steps per stage (a window every {LOG_STEPS})")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--batch-size-stage1", type=int, default=256, help="series per GPU at context 2048")
    parser.add_argument("--batch-size-stage2", type=int, default=64, help="series per GPU at context 8192")
    parser.add_argument("--series", type=int, default=6000, help="synthetic series in the stage-1 corpus")
    parser.add_argument("--series-stage2", type=int, default=1500,
                        help="synthetic series in the stage-2 corpus (each longer than stage 2's context)")
    parser.add_argument("--warmup-windows", type=int, default=WARMUP_WINDOWS,
                        help="first windows left out besides those that compiled")
    parser.add_argument("--tiny", action="store_true", help="the test config instead of base (CPU smoke run)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a variant to measure, as tsm train takes it: "
                             "--set parallelism.gradient_checkpointing=true --set model.dropout_rate=0")
    args = parser.parse_args()
    if args.tiny:
        args.batch_size_stage1 = args.batch_size_stage2 = 16
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}, torch {torch.__version__}, {args.steps} steps per stage "
          f"({math.ceil(args.steps / LOG_STEPS)} windows)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpora = make_corpora(work, args)
        results, model_id = [], None
        for stage in sorted(args.stages):
            if stage == 2 and model_id is None:
                raise SystemExit("stage 2 starts from stage 1's final-checkpoint: run --stages 1 2")
            result = run_stage(stage, args, corpora[stage], work, model_id)
            model_id = result["final"]
            results.append(result)
            print_result(result, device)
    print("\n| stage | context | series/GPU | samples/s | tokens/s | padding | peak GB | TFLOP/s | MFU | MFU useful |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['stage']} | {r['context']} | {r['batch']} | {r['samples_per_s']:,.0f} "
              f"| {r['tokens_per_s']:,.0f} | {r['padding']:.1%} | {r['peak_gb']:.1f} | {r['tflops']:.1f} "
              f"| {r['mfu']:.1%} | {r['mfu_useful']:.1%} |")


def make_corpora(work: Path, args: argparse.Namespace) -> dict[int, Path]:
    """Stage 1: series of 256-10,000 points (stage 1 sees them cut to 2,048). Stage 2: series longer than its
    context plus the prediction, so its batches are 8,192 wide (save the recipe's short-context share)."""
    started = time.perf_counter()
    workers = os.cpu_count() or 1
    stage1_max = 2000 if args.tiny else 10_000
    write_corpus(work / "corpus1", generate("simple", args.series, 256, stage1_max, seed=0, num_workers=workers))
    corpora = {1: work / "corpus1"}
    if 2 in args.stages:
        context = 1024 if args.tiny else yaml.safe_load(STAGE2_CONFIG.read_text())["context_length"]
        shortest = context + 64
        write_corpus(work / "corpus2", generate("simple", args.series_stage2, shortest, shortest + context // 2,
                                                seed=1, num_workers=workers))
        corpora[2] = work / "corpus2"
    print(f"corpora: {args.series} series of 256-{stage1_max} points"
          + (f", {args.series_stage2} of {shortest}-{shortest + context // 2}" if 2 in corpora else "")
          + f" in {time.perf_counter() - started:.0f} s", flush=True)
    return corpora


def print_result(r: dict, device: str) -> None:
    kept, windows, dropped = r["windows"]
    print(f"stage {r['stage']} (context {r['context']}, {r['params'] / 1e6:.1f}M parameters, {r['batch']} series per "
          f"GPU) on {device}: {r['steps_per_s']:.2f} steps/s, {r['samples_per_s']:,.0f} samples/s, "
          f"{r['tokens_per_s']:,.0f} tokens/s, padding {r['padding']:.1%}, peak {r['peak_gb']:.1f} GB, "
          f"{r['flops_per_series'] / 1e9:.1f} GFLOP per series, {r['tflops']:.1f} TFLOP/s, "
          f"MFU {r['mfu']:.1%} (useful tokens {r['mfu_useful']:.1%})", flush=True)
    print(f"compiled graphs: {r['graphs']}; median over {kept} of {windows} windows ({dropped} dropped for a compile)",
          flush=True)
    if "syncs" in r:
        syncs, steps = r["syncs"]
        print(f"host-device syncs in the steps between log steps: {syncs} over {steps} steps", flush=True)


if __name__ == "__main__":
    main()
