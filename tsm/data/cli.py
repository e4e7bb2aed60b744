"""`tsm data ...`: build the corpora that training and evaluation read."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger("tsm")


def _synth(args: argparse.Namespace) -> int:
    from tsm.data.synth import generate, write_corpus

    series = generate(args.kind, args.num_series, args.min_length, args.max_length, args.seed,
                      num_workers=args.workers, progress=True)
    rows = write_corpus(args.output, series)
    print(f"wrote {rows:,} {args.kind} series to {args.output}")
    return 0


def add_data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build, fetch and check datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    s = data_sub.add_parser("synth", help="write a synthetic training corpus (Arrow, datasets format)")
    s.add_argument("--output", required=True, help="folder to write (replaced atomically)")
    s.add_argument("--kind", default="mix", choices=["mix", "kernelsynth", "simple"],
                   help="mix (default): KernelSynth and simple trend/seasonality/noise series, 1:1")
    s.add_argument("--num-series", type=int, default=10_000)
    s.add_argument("--min-length", type=int, default=256)
    s.add_argument("--max-length", type=int, default=2048)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    s.set_defaults(func=_synth)
