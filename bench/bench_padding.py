"""Padding in training batches: the share of tokens that are only left-padding, without and with length
grouping (`length_group_batches`), on the default synthetic corpus's lengths and on a corpus of 1-2k-point
series, at the base recipe's stage-1 window (context 2048, 40% short contexts) and the test config's (512).

Also shows that grouping leaves the windows' distribution alone (context lengths and series drawn: the
two-sample Kolmogorov-Smirnov statistic and the means) and what drawing the groups costs (ms per batch).
Usage: python bench/bench_padding.py [--batches 256] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tsm.data.arrow import ArrowCorpus
from tsm.data.batches import TrainingBatches
from tsm.data.synth.corpus import generate, write_corpus


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def measure(corpus: ArrowCorpus, context_length: int, batch_size: int, group: int, batches: int) -> dict:
    source = TrainingBatches([corpus], [1.0], context_length=context_length, prediction_length=64, min_past=60,
                             batch_size=batch_size, output_patch_size=16, seed=0, short_context_share=0.4,
                             length_group_batches=group)
    padding = tokens = 0
    lengths, series = [], []
    started = time.perf_counter()
    for k in range(batches):
        batch, (pad, total) = source.batch_and_tokens(k)
        padding, tokens = padding + pad, tokens + total
        context = batch["context"].numpy()
        lengths.append(context.shape[1] - np.isnan(context).argmin(axis=1))  # left padding is leading NaN
        series.append(batch["future_target"][:, 0].numpy())
    return {"share": padding / tokens, "ms_per_batch": 1000 * (time.perf_counter() - started) / batches,
            "lengths": np.concatenate(lengths), "series": np.concatenate(series)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=256, help="batches per measurement (whole groups)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--group", type=int, default=16, help="length_group_batches")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {}
        # The default DAG's synthetic corpus: 4,000 series of 256-1536 points (config/config.yaml). Padding
        # depends on lengths only, and "simple" series have the lengths "mix" draws, at a fraction of the cost.
        write_corpus(Path(tmp) / "synth", generate("simple", 4000, 256, 1536, seed=0))
        corpora["default synthetic (256-1536)"] = ArrowCorpus(Path(tmp) / "synth")
        write_corpus(Path(tmp) / "long", generate("simple", 4000, 1000, 2000, seed=1))
        corpora["1-2k-point series"] = ArrowCorpus(Path(tmp) / "long")
        print(f"{args.batches} batches of {args.batch_size} series; groups of {args.group} batches")
        print(f"{'corpus':30} {'context':>7} {'padding off':>12} {'grouped':>8} {'ratio':>6} "
              f"{'KS lengths':>10} {'KS series':>9} {'mean length':>15} {'ms/batch':>13}")
        for name, corpus in corpora.items():
            for context_length in (2048, 512):
                off = measure(corpus, context_length, args.batch_size, 0, args.batches)
                on = measure(corpus, context_length, args.batch_size, args.group, args.batches)
                print(f"{name:30} {context_length:>7} {off['share']:>12.1%} {on['share']:>8.1%} "
                      f"{off['share'] / on['share']:>5.1f}x "
                      f"{ks_statistic(off['lengths'], on['lengths']):>10.3f} "
                      f"{ks_statistic(off['series'], on['series']):>9.3f} "
                      f"{off['lengths'].mean():>7.0f}/{on['lengths'].mean():<7.0f} "
                      f"{off['ms_per_batch']:>6.2f}/{on['ms_per_batch']:<6.2f}")
    n = args.batches * args.batch_size
    print(f"KS: two samples of {n:,} windows from one distribution differ by up to ~{1.36 * (2 / n) ** 0.5:.3f} "
          "(95%); the grouped windows are other draws of the same distribution, not the same windows")


if __name__ == "__main__":
    main()
