"""The `tsm` command: `tsm train`, `tsm evaluate`, `tsm data ...`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tsm.config import TsmError, add_train_arguments, config_from_args
from tsm.layout import SEASONAL_NAIVE


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a Chronos-2 model",
                       description="Train a Chronos-2 model from a YAML config; flags override the file.")
    add_train_arguments(p)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from tsm.launch import map_mpi_environment
    from tsm.train.loop import train
    from tsm.train.parallel import end_process_group

    map_mpi_environment(os.environ)  # a run started by mpirun: OpenMPI's ranks become torch's
    error = None
    try:
        train(cfg)
    except TsmError as exc:  # preempted, or stopped: its traceback would keep the run's model alive
        error, exc.__traceback__, exc.__context__, exc.__cause__ = exc, None, None, None
    end_process_group()
    if error is not None:
        raise error
    return 0


def _init_model(args: argparse.Namespace) -> int:
    """A randomly initialised model saved as a model folder: a local start for a fine-tune where no pretrained
    checkpoint is at hand (the own-data example and its tests; in production the start is amazon/chronos-2)."""
    cfg = config_from_args(args)
    import torch

    from tsm.atomic import replace_folder, temporary_path
    from tsm.model import build_model, set_forecast_lengths

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.context_length)
    set_forecast_lengths(model, cfg.context_length, cfg.prediction_length)
    temporary = temporary_path(cfg.output_dir, unique=True)
    model.save_pretrained(temporary, safe_serialization=True)
    replace_folder(temporary, cfg.output_dir)
    print(f"wrote a randomly initialised model ({sum(p.numel() for p in model.parameters()):,} parameters) "
          f"to {cfg.output_dir}")
    return 0


def _card(args: argparse.Namespace) -> int:
    from tsm.card import read_scores, write_model_card

    try:
        scores = read_scores(args.scores) if args.scores else None
        path = write_model_card(args.model, scores, args.name)
    except (OSError, ValueError) as exc:
        raise TsmError(f"model card for {args.model}: {exc}") from None
    print(f"wrote {path}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from tsm.publish import push_model

    url = push_model(args.model, args.repo, private=args.private, revision=args.revision,
                     commit_message=args.message, scores_paths=args.scores, timeout=args.timeout)
    print(f"uploaded {args.model} to {args.repo}: {url}")
    return 0


def _add_hub_parsers(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("card", help="(re)write a model folder's README.md model card, with benchmark scores")
    c.add_argument("--model", required=True, help="a model folder (final-checkpoint, checkpoint-N)")
    c.add_argument("--scores", nargs="+",
                   help=f"tsm evaluate CSVs: this model's (benchmark/stage2.csv) and optionally {SEASONAL_NAIVE}.csv")
    c.add_argument("--name", help="the card's title (default: the stage)")
    c.set_defaults(func=_card)
    p = sub.add_parser("push", help="upload a model folder and its model card to the Hugging Face hub")
    p.add_argument("--model", required=True, help="a model folder (final-checkpoint, checkpoint-N)")
    p.add_argument("--repo", required=True, help="hub repo id OWNER/NAME (created if missing)")
    p.add_argument("--scores", nargs="+", help="tsm evaluate CSVs for the card (this model's, seasonal naive's)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to push to (default: main)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the hub before giving up")
    p.set_defaults(func=_push)


def _benchmark_datasets(benchmark: str, default_repo: str) -> list:
    """For `tsm data download --benchmark`: data sits below eval, which reads benchmark files, so the reader
    is handed in from here (imported when used: it loads pandas and datasets)."""
    from tsm.eval.benchmark_files import datasets_of_benchmark

    return datasets_of_benchmark(benchmark, default_repo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsm", description="Train and evaluate Chronos-2 models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("launch", help="start and supervise this node's training ranks, no torchelastic (tsm launch --help)")
    _add_train_parser(sub)
    init = sub.add_parser("init-model", help="save a randomly initialised model folder (a local fine-tuning start)",
                          description="Build the config's model (random init, seeded by --seed) and save it as a "
                                      "model folder at --output-dir.")
    add_train_arguments(init)
    init.set_defaults(func=_init_model)
    from tsm.data.cli import add_data_parser
    from tsm.eval.cli import add_eval_parser
    from tsm.report.cli import add_report_parser

    add_data_parser(sub, benchmark_datasets=_benchmark_datasets)
    add_eval_parser(sub)
    add_report_parser(sub)
    _add_hub_parsers(sub)
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
    from tsm.records import PREEMPTED_EXIT_CODE
    from tsm.train.reliability import Preempted

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
