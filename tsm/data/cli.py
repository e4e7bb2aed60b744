"""`tsm data ...`: build the corpora that training and evaluation read."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tsm.data.download import HubDataset

logger = logging.getLogger("tsm")
HIDDEN = ("validate",)  # old command names that still work, left out of the help

# (benchmark file, default hub repo) -> its hub datasets. Benchmark files are read by tsm.eval, which sits above
# tsm.data: the `tsm` command (tsm/cli.py) hands the reader in, so `tsm data download --benchmark` works and
# data still never imports eval.
BenchmarkDatasets = Callable[[str, str], "list[HubDataset]"]


def _synth(args: argparse.Namespace) -> int:
    from tsm.data.synth import generate, write_corpus

    series = generate(args.kind, args.num_series, args.min_length, args.max_length, args.seed,
                      num_workers=args.workers, progress=True)
    rows = write_corpus(args.output, series)
    print(f"wrote {rows:,} {args.kind} series to {args.output}")
    return 0


def _tsmixup(args: argparse.Namespace) -> int:
    from tsm.data.tsmixup import MixupSettings, write_tsmixup

    settings = MixupSettings(args.num_series, args.max_components, args.alpha, args.min_length, args.max_length,
                             args.seed)
    print(write_tsmixup(args.input, args.output, settings, num_workers=args.workers, progress=True))
    return 0


def _build_offline(args: argparse.Namespace) -> int:
    from tsm.config import TsmError
    from tsm.data.competitions import build_all

    try:
        built = build_all(args.root, args.dataset or None)
    except ValueError as exc:  # unknown dataset name
        raise TsmError(str(exc)) from None
    for name, path in built.items():
        print(f"{name}: {path}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from tsm.data.arrow import DataError
    from tsm.data.checks import check

    paths, min_length = list(args.data or []), args.min_length
    if args.config:
        from tsm.config import load_config

        cfg = load_config(args.config)
        paths = paths or cfg.training_data_paths
        if min_length is None:
            min_length = cfg.min_past + cfg.prediction_length  # what the trainer needs of a series
    if not paths:
        raise DataError("nothing to check: pass --data DIR [DIR ...] or a --config with training_data_paths")
    if not check(paths, min_length, args.output, summary=args.summary).ok:
        where = f"; details in {args.output}" if args.output else ""
        raise DataError(f"data check failed: at least one corpus has fatal problems (listed above){where}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from tsm.data.convert import LongColumns, convert

    def names(text: str | None) -> list[str]:
        return [n.strip() for n in (text or "").split(",") if n.strip()]

    columns = LongColumns(args.id_column, args.timestamp_column, names(args.target_column),
                          names(args.past_covariates), names(args.known_covariates))
    summary = convert(args.input, args.output, args.format, columns, freq=args.freq, dtype=args.dtype)
    print(summary.text())
    return 0


def _split(args: argparse.Namespace) -> int:
    from tsm.data.split import split_corpus

    def names(text: str | None) -> list[str]:
        return [n.strip() for n in (text or "").split(",") if n.strip()]

    summary = split_corpus(args.input, args.output, args.horizon, args.num_windows, args.min_past,
                           args.seasonality, args.dataset, names(args.target_column), names(args.past_covariates),
                           names(args.known_covariates))
    print(summary.text())
    return 0


def _example_csv(args: argparse.Namespace) -> int:
    from tsm.data.example import write_example_csv

    path = write_example_csv(args.output, args.num_series, args.length, not args.univariate, args.seed)
    print(f"wrote {path}")
    return 0


def _add_own_data_parsers(data_sub: argparse._SubParsersAction) -> None:
    """split (the honest train/test split of a user's corpus) and example-csv (own data the project makes)."""
    p = data_sub.add_parser("split", help="cut the test region off a corpus: a training folder + a fev benchmark",
                            description="The last horizon x num-windows steps of every series become the test "
                                        "region: cut off OUTPUT/train, kept whole in OUTPUT/benchmark/ with the "
                                        "fev task file OUTPUT/tasks.yaml over it; too-short series are named in "
                                        "OUTPUT/split.json.")
    p.add_argument("--input", required=True, help="a corpus folder (tsm data convert's output)")
    p.add_argument("--output", required=True, help="folder to write train/, benchmark/, tasks.yaml, split.json")
    p.add_argument("--horizon", type=int, required=True, help="steps per test window")
    p.add_argument("--num-windows", type=int, default=1, help="test windows per series, back to back at its end")
    p.add_argument("--min-past", type=int, default=1, help="history a series needs before its validation window")
    p.add_argument("--seasonality", type=int, default=1, help="for MASE and seasonal naive")
    p.add_argument("--dataset", default="own", help="the benchmark dataset's (task's) name")
    p.add_argument("--target-column", help="names of the target variates, e.g. sales,returns (default target_i)")
    p.add_argument("--past-covariates", help="names of the past-only covariates, in the corpus' order")
    p.add_argument("--known-covariates", help="names of the known-future covariates, in the corpus' order")
    p.set_defaults(func=_split)
    e = data_sub.add_parser("example-csv", help="write the example own-data CSV (sales driven by promotions)")
    e.add_argument("--output", required=True, help="CSV file to write")
    e.add_argument("--num-series", type=int, default=40)
    e.add_argument("--length", type=int, default=200)
    e.add_argument("--univariate", action="store_true", help="sales only (default: sales and returns)")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=_example_csv)


def _download(args: argparse.Namespace) -> int:
    from tsm.data.arrow import DataError
    from tsm.data.download import HubDataset, download

    if args.gift_eval is not None or args.gift_eval_pretrain is not None:  # repos of saved datasets, as they are
        from tsm.data.download import GIFT_EVAL_PRETRAIN_REPO, GIFT_EVAL_REPO, download_repo_snapshot

        pretrain = args.gift_eval_pretrain is not None
        repo = GIFT_EVAL_PRETRAIN_REPO if pretrain else GIFT_EVAL_REPO
        folders = (args.gift_eval_pretrain if pretrain else args.gift_eval) or None
        state = download_repo_snapshot(repo, args.root, args.revision, folders, force=args.force,
                                       probe_timeout=args.timeout)
        print(f"{state:>16}: {repo} -> {args.root}")
        return 0
    wanted = [HubDataset(args.repo, name, args.revision) for name in args.dataset or []]
    for benchmark in args.benchmark or []:
        wanted += [d for d in args.benchmark_datasets(benchmark, args.repo) if d not in wanted]
    if not wanted:
        raise DataError("nothing to download: pass --dataset NAME [NAME ...] and/or --benchmark FILE")
    status = download(wanted, args.root, force=args.force, probe_timeout=args.timeout, missing_only=args.missing_only)
    for name, state in status.items():
        print(f"{state:>16}: {args.root}/{name}")
    return 0


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", help="corpus folders (default: the config's training_data_paths)")
    parser.add_argument("--config", help="training config YAML: min_past + prediction_length is the minimum length")
    parser.add_argument("--min-length", type=int, help="minimum usable series length (overrides --config)")
    parser.add_argument("--output", help="where to write the JSON report (report.json)")
    parser.add_argument("--summary", help="also write the printed summary here (summary.txt)")
    parser.set_defaults(func=_check)


def _add_check_parsers(data_sub: argparse._SubParsersAction, benchmark_datasets: BenchmarkDatasets) -> None:
    """check (and its hidden old name, validate), convert, download."""
    _add_check_arguments(data_sub.add_parser(
        "check", help="data checks: schema, lengths, NaN/inf, covariates -> JSON report",
        description="Check corpora before training: schema, lengths, NaN/inf, constant and too-short series, "
                    "covariate shapes. Exits non-zero on fatal problems, naming the dataset, row and column."))
    # `tsm data validate`, the command's old name, keeps working; without a help text it is not listed.
    _add_check_arguments(data_sub.add_parser("validate", description="The old name of `tsm data check`."))

    c = data_sub.add_parser("convert", help="long CSV/Parquet or GluonTS JSON lines -> Arrow corpus")
    c.add_argument("--input", required=True, help="a .csv, .parquet or .jsonl file (optionally .gz)")
    c.add_argument("--output", required=True, help="corpus folder to write (replaced atomically)")
    c.add_argument("--format", choices=["csv", "parquet", "jsonl"], help="default: from the file name")
    c.add_argument("--id-column", default="item_id")
    c.add_argument("--timestamp-column", default="timestamp")
    c.add_argument("--target-column", default="target", help="one column, or several (a,b) for a multivariate target")
    c.add_argument("--past-covariates", help="columns known only in the past, e.g. a,b")
    c.add_argument("--known-covariates", help="columns known in the future too, e.g. c,d")
    c.add_argument("--freq", help="JSON lines only: the series' frequency (pandas alias: h, D, W, M, Q, Y)")
    c.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="value type to store")
    c.set_defaults(func=_convert)

    d = data_sub.add_parser("download", help="fetch hub datasets into ROOT/<name>/ for offline use")
    d.add_argument("--root", required=True, help="folder that receives one subfolder per dataset")
    d.add_argument("--benchmark", nargs="+", help="benchmark YAML(s) whose datasets to fetch (config/benchmarks/)")
    d.add_argument("--dataset", nargs="+", help="hub config name(s) to fetch from --repo")
    d.add_argument("--repo", default="autogluon/chronos_datasets", help="hub dataset repo for --dataset")
    d.add_argument("--revision", help="hub revision (commit, tag or branch) for --dataset, for reproducibility")
    d.add_argument("--gift-eval", nargs="*", metavar="NAME",
                   help="fetch Salesforce/GiftEval into ROOT as the hub lays it out (one saved folder per name, "
                        "e.g. m4_yearly, electricity/15T): all of it, or the NAMEs given")
    d.add_argument("--gift-eval-pretrain", nargs="*", metavar="NAME",
                   help="fetch Salesforce/GiftEvalPretrain (GIFT-Eval's non-leaking pretraining corpus) into ROOT: "
                        "all of it, or the NAMEd saved-dataset folders")
    d.add_argument("--force", action="store_true", help="fetch again even when complete")
    d.add_argument("--missing-only", action="store_true",
                   help="fetch only datasets with no data files under ROOT yet (keeps what build-offline wrote)")
    d.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the hub before giving up")
    d.set_defaults(func=_download, benchmark_datasets=benchmark_datasets)


def add_data_parser(sub: argparse._SubParsersAction, benchmark_datasets: BenchmarkDatasets) -> None:
    """`tsm data ...`; `benchmark_datasets` lists a benchmark file's hub datasets (tsm.eval.benchmark_files)."""
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
    m = data_sub.add_parser("tsmixup", help="mix corpora into new series (TSMixup, the Chronos paper's augmentation)",
                            description="Each new series: k <= --max-components mean-scaled windows of series "
                                        "drawn from the --input corpora (corpus chosen uniformly), combined with "
                                        "Dirichlet(--alpha) weights, of a random length in [--min-length, "
                                        "--max-length]. Deterministic for a --seed, whatever --workers.")
    m.add_argument("--input", nargs="+", required=True, help="corpus folders to mix (synthetic, hub or your own)")
    m.add_argument("--output", required=True, help="folder to write (replaced atomically)")
    m.add_argument("--num-series", type=int, required=True)
    m.add_argument("--max-components", type=int, default=3, help="the most series mixed into one (the paper's K)")
    m.add_argument("--alpha", type=float, default=1.5, help="Dirichlet concentration of the mixing weights")
    m.add_argument("--min-length", type=int, default=128, help="shortest output; shorter inputs are not drawn")
    m.add_argument("--max-length", type=int, default=2048)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--workers", type=int, default=1, help="processes (the output does not depend on it)")
    m.set_defaults(func=_tsmixup)
    b = data_sub.add_parser("build-offline", help="build the M1/M3/Tourism benchmark datasets (no network)")
    b.add_argument("--root", required=True, help="datasets root: one folder per dataset is written here")
    b.add_argument("--dataset", action="append", help="only this dataset (repeatable; default: all nine)")
    b.set_defaults(func=_build_offline)
    _add_check_parsers(data_sub, benchmark_datasets)
    _add_own_data_parsers(data_sub)
    data_sub.metavar = "{" + ",".join(name for name in data_sub.choices if name not in HIDDEN) + "}"
