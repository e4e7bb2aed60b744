"""`tsm evaluate`: score checkpoints (and the seasonal naive baseline) on a benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsm.config import TsmError
from tsm.layout import SEASONAL_NAIVE

DEFAULT_REFERENCE = "config/benchmarks/fev/published"  # published fev summaries shipped with tsm (Apache-2.0)


def _evaluate(args: argparse.Namespace) -> int:
    from tsm.eval.benchmark import evaluate, relative_scores, summary_table
    from tsm.eval.fev_tasks import evaluate_fev, is_fev_benchmark
    from tsm.eval.gift_eval.protocol import is_gift_eval_benchmark

    if is_gift_eval_benchmark(args.benchmark):  # a file with `benchmark: gift-eval`
        from tsm.eval.gift_eval.command import run_gift_eval

        return run_gift_eval(args)
    if not args.model:
        raise TsmError("tsm evaluate: give at least one --model")
    models = list(dict.fromkeys(args.model))  # keep order, drop repeats
    fev_benchmark = is_fev_benchmark(args.benchmark)
    options = dict(batch_size=args.batch_size, device=args.device, series_check=not args.no_series_check)
    try:
        if fev_benchmark:
            results, summaries = evaluate_fev(models, args.benchmark, args.datasets_root, **options)
        else:
            results, summaries = evaluate(models, args.benchmark, args.datasets_root, **options), None
    except (FileNotFoundError, ValueError) as exc:  # bad benchmark file, missing dataset, unloadable model
        raise TsmError(str(exc)) from None
    relative = relative_scores(results) if SEASONAL_NAIVE in models else None
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(output, index=False)
    written = [output]
    if relative is not None:
        written.append(output.with_name(output.stem + "-relative.csv"))
        relative.to_csv(written[-1], index=False)
    if summaries is not None:  # fev's own format: fev.leaderboard reads it beside published results
        written.append(output.with_name(output.stem + "-fev-summaries.csv"))
        summaries.to_csv(written[-1], index=False)
    print(summary_table(results, relative))
    if SEASONAL_NAIVE in models:
        board = _leaderboard(args, results, summaries, models)
        if board is not None:
            written.append(output.with_name(output.stem + "-leaderboard.csv"))
            board.to_csv(written[-1], index=False)
    print("\nwrote " + ", ".join(map(str, written)))
    return 0


def _leaderboard(args: argparse.Namespace, results, summaries, models: list[str]):
    """fev's win rate and skill score against the seasonal naive baseline, with published models joining
    a fev benchmark's tasks; None when there is nothing to rank."""
    from tsm.eval.benchmark import metric_columns
    from tsm.eval.leaderboard import format_leaderboard, leaderboard, read_reference, summaries_from_results

    reference = None
    if summaries is None:
        summaries = summaries_from_results(results, args.benchmark)  # tsm's format: no published twin
    else:
        paths = args.reference_results
        if paths is None:  # from here, else beside the installed package (an editable install's checkout)
            here, checkout = Path(DEFAULT_REFERENCE), Path(__file__).resolve().parents[2] / DEFAULT_REFERENCE
            paths = sorted((here if here.is_dir() else checkout).glob("*.csv"))
        try:
            reference = read_reference(paths)
        except (FileNotFoundError, ValueError) as exc:
            raise TsmError(str(exc)) from None
    published = set(reference["model_name"]) if reference is not None and len(reference) else set()
    if len(set(summaries["model_name"]) | published) < 2:  # the baseline alone: nothing to rank
        return None
    try:
        board, notes = leaderboard(summaries, models, SEASONAL_NAIVE, metric_columns(results), reference,
                                   leakage_imputation_model=args.leakage_imputation_model)
    except ValueError as exc:  # e.g. an imputation model that is not among the results
        raise TsmError(f"leaderboard: {exc}") from None
    print("\nLeaderboard (fev's win rate and skill score, baseline " + SEASONAL_NAIVE + "):")
    print(format_leaderboard(board))
    for note in notes:
        print(f"  note: {note}")
    return board


def _leakage(args: argparse.Namespace) -> int:
    import json

    from tsm.data.arrow import DataError
    from tsm.eval.benchmark_files import find_leakage

    try:
        results = find_leakage(args.benchmark, args.datasets_root, args.corpus)
    except (FileNotFoundError, ValueError, DataError) as exc:
        raise TsmError(str(exc)) from None
    for result in results:
        print(result.describe())
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps([r.as_json() for r in results], indent=2))
        print(f"wrote {args.output}")
    return 0


def _evaluate_series(args: argparse.Namespace) -> int:
    from tsm.eval.own_series import write_series_scores

    models = {}
    for item in args.model:
        name, _, model = item.partition("=")
        if not model:
            raise TsmError(f"--model {item!r}: expected NAME=MODEL (start=PATH, finetune=PATH, "
                           f"{SEASONAL_NAIVE}={SEASONAL_NAIVE})")
        models[name] = model
    try:
        scores = write_series_scores(models, args.benchmark, args.datasets_root, args.output_dir,
                                     batch_size=args.batch_size, device=args.device)
    except (FileNotFoundError, ValueError) as exc:
        raise TsmError(str(exc)) from None
    print(scores.groupby("model")[["WQL", "MASE"]].median().to_string())
    print(f"wrote {len(scores):,} series scores to {args.output_dir}")
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score models on a benchmark (WQL, MASE)",
                       description="Forecast each benchmark dataset's windows and score WQL and MASE as the "
                                   f"Chronos papers do; with {SEASONAL_NAIVE} among the models, also write the "
                                   "aggregate relative scores (<output>-relative.csv).")
    p.add_argument("--model", action="append",
                   help=f"a Chronos-2 checkpoint folder, a hub id, or '{SEASONAL_NAIVE}' (repeat to compare)")
    p.add_argument("--benchmark", required=True,
                   help="tsm benchmark definition (config/benchmarks/lite-offline.yaml) or fev task file "
                        "(config/benchmarks/fev/fev-bench.yaml, run through fev) or GIFT-Eval file "
                        "(config/benchmarks/gift-eval.yaml: datasets root laid out as Salesforce/GiftEval)")
    p.add_argument("--datasets-root", default="data/benchmarks",
                   help="folder holding one datasets folder per benchmark dataset (fev tasks: per dataset_config; "
                        "a task not found there is read from the hub)")
    p.add_argument("--reference-results", nargs="*", default=None, metavar="CSV",
                   help="published fev summaries to rank against on a fev benchmark (default: those in tsm's "
                        f"{DEFAULT_REFERENCE}/; none: pass the flag alone)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default="results/evaluation.csv",
                   help="CSV: dataset,model,MASE,WQL,regime,regime_reason (regime: in-domain, zero-shot, "
                        "unknown or n.a., from the model's training provenance); beside it <name>-relative.csv, "
                        "<name>-leaderboard.csv (win rate, skill score) and, for fev tasks, <name>-fev-summaries.csv")
    p.add_argument("--leakage-imputation-model", metavar="MODEL",
                   help="in the leaderboard, replace a model's score on a task it was trained on (regime in-domain) "
                        f"by this zero-shot model's, as fev does (e.g. {SEASONAL_NAIVE})")
    p.add_argument("--no-series-check", action="store_true",
                   help="skip searching the model's training corpora for the benchmark's series (tsm leakage); "
                        "it reads the corpora once, ~2.5M values/s")
    p.add_argument("--check-seasonal-naive", action="store_true",
                   help="GIFT-Eval: score the seasonal naive baseline and compare it with the published one "
                        "configuration by configuration (exit 1 when any differs); run it on the hub's data")
    p.add_argument("--rtol", type=float, default=1e-3, help="GIFT-Eval: relative tolerance of that check")
    p.set_defaults(func=_evaluate)
    leak = sub.add_parser("leakage", help="find a benchmark's series in training corpora (renamed, converted, cut)",
                          description="Hash every run of 8 consecutive values of each benchmark series and look "
                                      "up every run of the corpora (exact copies), and match the shape of every "
                                      "run of 16 differences, verified by an affine fit (copies scaled, shifted, "
                                      "rounded to float16/bfloat16, cut): per dataset, the share of series whose "
                                      "history or test window a corpus holds, exact and transformed copies apart. "
                                      "tsm evaluate runs the same check on a model's own corpora (from its "
                                      "training provenance).")
    leak.add_argument("--benchmark", required=True, help="benchmark definition (config/benchmarks/...)")
    leak.add_argument("--datasets-root", default="data/benchmarks", help="folder holding the benchmark datasets")
    leak.add_argument("--corpus", nargs="+", required=True, help="training corpus folders to search")
    leak.add_argument("--output", help="also write the findings as JSON here")
    leak.set_defaults(func=_leakage)
    series = sub.add_parser("evaluate-series", help="score models per series of a fev task file (own data)",
                            description="Per series (item and target column) WQL and MASE of each model on the "
                                        "task windows, the win rate and ratio of finetune vs the others with "
                                        "bootstrap intervals, and the best/median/worst series' forecasts: "
                                        "OUTPUT_DIR/series-scores.csv and fan-charts.json.")
    series.add_argument("--model", action="append", required=True, metavar="NAME=MODEL",
                        help=f"start=FOLDER_OR_HUB_ID, finetune=FOLDER, {SEASONAL_NAIVE}={SEASONAL_NAIVE}")
    series.add_argument("--benchmark", required=True, help="a fev task file (tsm data split's tasks.yaml)")
    series.add_argument("--datasets-root", required=True, help="folder holding the task's dataset folder")
    series.add_argument("--output-dir", required=True)
    series.add_argument("--batch-size", type=int, default=256)
    series.add_argument("--device", default="cpu")
    series.set_defaults(func=_evaluate_series)
