"""The `tsm` command: `tsm train`, `tsm evaluate`, `tsm data ...`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tsm.config import TsmError

# CLI flag -> config key. Flags override the YAML file; unset flags leave it alone.
TRAIN_OVERRIDES: dict[str, tuple[type, str]] = {
    "model_id": (str, "hub id or local checkpoint folder to start from"),
    "context_length": (int, "context length to train at (updates the model's config)"),
    "prediction_length": (int, "prediction length to train at"),
    "max_steps": (int, "number of optimizer steps"),
    "learning_rate": (float, "peak learning rate"),
    "per_device_train_batch_size": (int, "series per device per micro-batch"),
    "gradient_accumulation_steps": (int, "micro-batches per optimizer step"),
    "output_dir": (str, "where checkpoints, logs and TensorBoard files go"),
    "resume_from_checkpoint": (str, "a checkpoint-<step> folder to continue from"),
    "max_train_series": (int, "use at most this many series per corpus (deterministic subset)"),
    "seed": (int, "random seed"),
}


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a Chronos-2 model",
                       description="Train a Chronos-2 model from a YAML config; flags override the file.")
    p.add_argument("--config", help="training config YAML (config/training/*.yaml)")
    for key, (kind, help_text) in TRAIN_OVERRIDES.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, help=help_text)
    p.add_argument("--random-init", dest="random_init", action=argparse.BooleanOptionalAction, default=None,
                   help="start from random weights (--no-random-init: load --model-id)")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set model.d_model=128 (YAML value syntax)")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    import yaml

    from tsm.config import ConfigError, load_config

    overrides = {key: getattr(args, key) for key in [*TRAIN_OVERRIDES, "random_init"]}
    for item in args.extra:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. --set log_steps=5")
        key, value = item.split("=", 1)
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({exc.problem})") from None
    cfg = load_config(args.config, overrides)
    from tsm.launch import map_mpi_environment
    from tsm.train.loop import train

    map_mpi_environment(os.environ)  # a run started by mpirun: OpenMPI's ranks become torch's

    train(cfg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsm", description="Train and evaluate Chronos-2 models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("launch", help="multi-node: start accelerate launch on this SLURM node (tsm launch --help)")
    _add_train_parser(sub)
    from tsm.data.cli import add_data_parser
    from tsm.eval.cli import add_eval_parser
    from tsm.report.cli import add_report_parser

    add_data_parser(sub)
    add_eval_parser(sub)
    add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:  # its own parser: everything after `--` goes to tsm train untouched
        from tsm.launch import main as launch_main

        try:
            return launch_main(argv[1:])
        except TsmError as exc:
            print(f"tsm launch: error: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    from tsm.train.reliability import PREEMPTED_EXIT_CODE, Preempted

    try:
        return args.func(args)
    except Preempted as exc:
        print(f"tsm {args.command}: {exc}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except TsmError as exc:
        logging.getLogger("tsm").debug("user error", exc_info=True)
        print(f"tsm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
