"""GPU check (issue 13): the real training loop - `tsm.train.loop.train()` on the base configs, with its
loader, length grouping, bad-step guard, monitor and checkpoints - for a fixed number of steps, stage 1
(context 2048, from random init) then stage 2 (context 8192, from stage 1's final-checkpoint).

Per stage: samples/s, tokens/s, peak GPU memory, padding share, and MFU over all tokens and over useful
(non-padding) tokens. FLOPs are counted per batch (the batches are a function of their index, so they are
rebuilt here on the CPU): 6 x parameters x tokens, where the input embedding sees context and output patches,
the encoder blocks every token and the output head the output patches only, plus time attention
(12 x layers x heads x d_kv x tokens^2 per series) and group attention within each series' own group. Time
is the trainer's own per-window rate (TensorBoard perf/steps_per_s) after WARMUP_WINDOWS windows (compile).
The stage-1 run also counts host-device syncs (torch.cuda.set_sync_debug_mode) between two log steps.

  bash bench/gpu_check.sh                             # one H100/H200: about 6 minutes
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
import tempfile
import time
import warnings
from pathlib import Path

import torch

from tsm.config import TrainConfig, load_config, parse_settings
from tsm.data.batches import TrainingBatches
from tsm.data.synth.corpus import generate, write_corpus
from tsm.train.loop import open_training_data, train
from tsm.train.monitor import TrainingMonitor

REPO = Path(__file__).resolve().parents[1]
LOG_STEPS = 10
WARMUP_WINDOWS = 2  # the build of the compiled blocks, then the shapes that turn dynamic
# Dense bf16 peaks (TFLOP/s), most specific name first.
BF16_PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0)]


def peak_flops(device_name: str) -> float | None:
    return next((tf * 1e12 for key, tf in BF16_PEAK_TFLOPS if key in device_name), None)


class FlopCounter:
    """Model FLOPs of one training step (forward + backward) on a batch, from its shapes."""

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig) -> None:
        def params(module: torch.nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        self.embedding = params(model.input_patch_embedding)
        self.encoder = params(model.encoder)
        self.head = params(model.output_patch_embedding)
        self.patch = cfg.model.input_patch_size
        self.attention = 12 * cfg.model.num_layers * cfg.model.num_heads * cfg.model.d_kv
        self.extra_tokens = 1 if cfg.model.use_reg_token else 0
        self.total_params = params(model)

    def step(self, batch: dict, useful: bool) -> float:
        """FLOPs of `batch`; `useful`: as if each row had only its own context patches (no padding)."""
        context = batch["context"]
        rows, width = context.shape
        out = int(batch["num_output_patches"])
        if useful:  # left padding is the leading NaN run of each row
            lengths = width - torch.isnan(context).int().argmin(dim=1)
            patches = torch.ceil(lengths / self.patch).double()
        else:
            patches = torch.full((rows,), math.ceil(width / self.patch), dtype=torch.float64)
        tokens = patches + self.extra_tokens + out
        groups = torch.bincount(batch["group_ids"])
        group_size = groups[batch["group_ids"]].double()  # group attention: each token over its group's rows
        linear = 6 * (self.embedding * (patches + out) + self.encoder * tokens + self.head * out)
        return float((linear + self.attention * tokens**2 + self.attention * tokens * group_size).sum())


def base_config(stage: int, tiny: bool, overrides: dict) -> TrainConfig:
    name = "chronos2-test.yaml" if tiny else ("chronos2-base.yaml" if stage == 1 else "chronos2-base-stage2.yaml")
    values = {"log_steps": LOG_STEPS, "gradient_accumulation_steps": 1, "eval_steps": None,
              "dataloader_num_workers": min(8, max(1, (os.cpu_count() or 2) - 2)), **overrides}
    if tiny and stage == 2:
        values.update(random_init=False, context_length=1024)
    return load_config(REPO / "config/training" / name, values)


class SyncCounter:
    """Host-device syncs (CUDA's sync debug warnings), in order with the monitor's step hand-overs."""

    def __init__(self) -> None:
        self.events: list[int | None] = []  # a step number at its hand-over, None for a sync

    def __enter__(self) -> SyncCounter:
        self._on_step, self._show = TrainingMonitor.on_step, warnings.showwarning
        self._filters = list(warnings.filters)
        events, on_step, show = self.events, self._on_step, self._show

        def marked(monitor, step, *args, **kwargs):
            events.append(step)
            return on_step(monitor, step, *args, **kwargs)

        def record(message, category, *rest, **kwargs):
            if "synchroniz" in str(message):
                events.append(None)
            else:
                show(message, category, *rest, **kwargs)

        TrainingMonitor.on_step, warnings.showwarning = marked, record
        warnings.simplefilter("always")  # every sync, not the first per line
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.set_sync_debug_mode("default")
        TrainingMonitor.on_step, warnings.showwarning = self._on_step, self._show
        warnings.filters[:] = self._filters

    def quiet_step_syncs(self, max_steps: int) -> tuple[int, int]:
        """(syncs, steps) from the hand-over of each step after the warm-up that is not a log step to the next."""
        syncs: collections.Counter = collections.Counter()
        step = 0
        for event in self.events:
            if event is None:
                syncs[step] += 1
            else:
                step = event
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
    with counter or contextlib.nullcontext():
        final = train(cfg)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(work / f"stage{stage}" / "tensorboard")).Reload()
    rates = {e.step: e.value for e in events.Scalars("perf/steps_per_s")}
    measured = [s for s in sorted(rates) if s > WARMUP_WINDOWS * LOG_STEPS]
    seconds = sum(LOG_STEPS / rates[s] for s in measured)
    # The measured steps' batches, rebuilt: step s trained on batch s - 1 (one micro-batch per step).
    from tsm.model import load_model

    model = load_model(str(final))
    flops = FlopCounter(model, cfg)
    batches: TrainingBatches = open_training_data(cfg, cfg.model.output_patch_size, rank=0)
    all_flops = useful_flops = samples = tokens = padding = 0.0
    for window_end in measured:
        for step in range(window_end - LOG_STEPS + 1, window_end + 1):
            batch, (pad, total) = batches.batch_and_tokens(step - 1)
            all_flops += flops.step(batch, useful=False)
            useful_flops += flops.step(batch, useful=True)
            samples += batch["context"].shape[0]
            tokens, padding = tokens + total, padding + pad
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_flops(name)
    result = {"stage": stage, "context": cfg.context_length, "batch": batch_size, "params": flops.total_params,
              "steps_per_s": statistics.median(rates[s] for s in measured), "samples_per_s": samples / seconds,
              "tokens_per_s": tokens / seconds, "padding": padding / tokens, "peak_gb": peak_gb,
              "tflops": all_flops / seconds / 1e12, "mfu": all_flops / seconds / peak if peak else math.nan,
              "mfu_useful": useful_flops / seconds / peak if peak else math.nan,
              "flops_per_series": all_flops / samples, "final": str(final)}
    if counter is not None:
        result["syncs"] = counter.quiet_step_syncs(args.steps)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="steps per stage (log every 10)")
    parser.add_argument("--stages", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--batch-size-stage1", type=int, default=256, help="series per GPU at context 2048")
    parser.add_argument("--batch-size-stage2", type=int, default=64, help="series per GPU at context 8192")
    parser.add_argument("--series", type=int, default=6000, help="synthetic series in the corpus")
    parser.add_argument("--tiny", action="store_true", help="the test config instead of base (CPU smoke run)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a variant to measure, as tsm train takes it: "
                             "--set parallelism.gradient_checkpointing=true --set model.dropout_rate=0")
    args = parser.parse_args()
    if args.tiny:
        args.batch_size_stage1 = args.batch_size_stage2 = 16
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}, torch {torch.__version__}, {args.steps} steps per stage", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        # Series of 256-10,000 points: stage 2's 8,192-point contexts need long series, stage 1 sees them cut.
        max_length = 2000 if args.tiny else 10_000
        write_corpus(work / "corpus", generate("simple", args.series, 256, max_length, seed=0,
                                               num_workers=os.cpu_count() or 1))
        print(f"corpus: {args.series} series of 256-{max_length} points in {time.perf_counter() - started:.0f} s",
              flush=True)
        results, model_id = [], None
        for stage in sorted(args.stages):
            if stage == 2 and model_id is None:
                raise SystemExit("stage 2 starts from stage 1's final-checkpoint: run --stages 1 2")
            result = run_stage(stage, args, work / "corpus", work, model_id)
            model_id = result["final"]
            results.append(result)
            print_result(result, device)
    print("\n| stage | context | series/GPU | samples/s | tokens/s | padding | peak GB | TFLOP/s | MFU | MFU useful |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['stage']} | {r['context']} | {r['batch']} | {r['samples_per_s']:,.0f} "
              f"| {r['tokens_per_s']:,.0f} | {r['padding']:.1%} | {r['peak_gb']:.1f} | {r['tflops']:.1f} "
              f"| {r['mfu']:.1%} | {r['mfu_useful']:.1%} |")


def print_result(r: dict, device: str) -> None:
    print(f"stage {r['stage']} (context {r['context']}, {r['params'] / 1e6:.1f}M parameters, {r['batch']} series per "
          f"GPU) on {device}: {r['steps_per_s']:.2f} steps/s, {r['samples_per_s']:,.0f} samples/s, "
          f"{r['tokens_per_s']:,.0f} tokens/s, padding {r['padding']:.1%}, peak {r['peak_gb']:.1f} GB, "
          f"{r['flops_per_series'] / 1e9:.1f} GFLOP per series, {r['tflops']:.1f} TFLOP/s, "
          f"MFU {r['mfu']:.1%} (useful tokens {r['mfu_useful']:.1%})", flush=True)
    if "syncs" in r:
        syncs, steps = r["syncs"]
        print(f"host-device syncs between log steps: {syncs} over {steps} steps", flush=True)


if __name__ == "__main__":
    main()
