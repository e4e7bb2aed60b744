"""`tsm evaluate`: score checkpoints (and the seasonal naive baseline) on a benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsm.config import TsmError


def _evaluate(args: argparse.Namespace) -> int:
    from tsm.eval.benchmark import SEASONAL_NAIVE, evaluate, relative_scores, summary_table

    models = list(dict.fromkeys(args.model))  # keep order, drop repeats
    try:
        results = evaluate(models, args.benchmark, args.datasets_root, batch_size=args.batch_size,
                           device=args.device, series_check=not args.no_series_check)
    except (FileNotFoundError, ValueError) as exc:  # bad benchmark file, missing dataset, unloadable model
        raise TsmError(str(exc)) from None
    relative = relative_scores(results) if SEASONAL_NAIVE in models else None
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(output, index=False)
    written = [str(output)]
    if relative is not None:
        relative_path = output.with_name(output.stem + "-relative.csv")
        relative.to_csv(relative_path, index=False)
        written.append(str(relative_path))
    print(summary_table(results, relative))
    print("\nwrote " + " and ".join(written))
    return 0


def _leakage(args: argparse.Namespace) -> int:
    import json

    from tsm.data.arrow import DataError
    from tsm.eval.leakage import find_leakage

    try:
        results = find_leakage(args.benchmark, args.datasets_root, args.corpus)
    except (FileNotFoundError, ValueError, DataError) as exc:
        raise TsmError(str(exc)) from None
    for result in results:
        print(result.describe())
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps([
            {"dataset": r.name, "series": r.series, "found": r.found, "share": r.share,
             "found_with_test_window": len(r.found_test), "found_history": len(r.found_history),
             "corpora": r.corpora} for r in results], indent=2))
        print(f"wrote {args.output}")
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score models on a benchmark (WQL, MASE)",
                       description="Forecast each benchmark dataset's windows and score WQL and MASE as the "
                                   "Chronos papers do; with seasonal-naive among the models, also write the "
                                   "aggregate relative scores (<output>-relative.csv).")
    p.add_argument("--model", action="append", required=True,
                   help="a Chronos-2 checkpoint folder, a hub id, or 'seasonal-naive' (repeat to compare)")
    p.add_argument("--benchmark", required=True, help="benchmark definition, e.g. config/benchmarks/lite-offline.yaml")
    p.add_argument("--datasets-root", default="data/benchmarks",
                   help="folder holding one datasets folder per benchmark dataset")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default="results/evaluation.csv",
                   help="CSV: dataset,model,MASE,WQL,regime,regime_reason (regime: in-domain, zero-shot, "
                        "unknown or n.a., from the model's training provenance)")
    p.add_argument("--no-series-check", action="store_true",
                   help="skip searching the model's training corpora for the benchmark's series (tsm leakage); "
                        "it reads the corpora once, ~28M values/s")
    p.set_defaults(func=_evaluate)
    leak = sub.add_parser("leakage", help="find a benchmark's series in training corpora (renamed, converted, cut)",
                          description="Hash every run of 8 consecutive values of each benchmark series and look "
                                      "up every run of the corpora: per dataset, the share of series whose "
                                      "history or test window a corpus holds. tsm evaluate runs the same check "
                                      "on a model's own corpora (from its training provenance).")
    leak.add_argument("--benchmark", required=True, help="benchmark definition (config/benchmarks/...)")
    leak.add_argument("--datasets-root", default="data/benchmarks", help="folder holding the benchmark datasets")
    leak.add_argument("--corpus", nargs="+", required=True, help="training corpus folders to search")
    leak.add_argument("--output", help="also write the findings as JSON here")
    leak.set_defaults(func=_leakage)
