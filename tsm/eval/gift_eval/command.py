"""`tsm evaluate --benchmark <a gift-eval benchmark file>`: score GIFT-Eval, write the submission folders and
the leaderboard beside the published results; `--check-seasonal-naive` checks tsm's path against the published
seasonal naive figures (run it on the hub's data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsm.config import TsmError
from tsm.eval.gift_eval.protocol import load_benchmark_spec
from tsm.eval.gift_eval.ranking import (
    BASELINE,
    format_leaderboard,
    leaderboard,
    normalised_scores,
    read_published,
    seasonal_naive_check,
)
from tsm.eval.gift_eval.runner import evaluate_gift_eval, model_display_name
from tsm.eval.gift_eval.submission import LeakageVerdict, leakage_verdict, submission_config, write_submission
from tsm.layout import SEASONAL_NAIVE


def submission_folder(output: Path) -> Path:
    return output.with_name(output.stem + "-submission")


def run_gift_eval(args: argparse.Namespace) -> int:
    models = list(dict.fromkeys(args.model or []))
    if args.check_seasonal_naive and SEASONAL_NAIVE not in models:
        models.insert(0, SEASONAL_NAIVE)
    if not models:
        raise TsmError("tsm evaluate: give --model (a checkpoint folder, a hub id or seasonal-naive), or "
                       "--check-seasonal-naive")
    try:
        spec = load_benchmark_spec(args.benchmark)
        published = read_published(args.reference_results) if args.reference_results != [] else None
        if args.check_seasonal_naive and (published is None or BASELINE not in set(published["model"])):
            raise ValueError("--check-seasonal-naive compares with the published seasonal naive: drop the empty "
                             "--reference-results (tsm's copies), or name all_results.csv files holding "
                             f"{BASELINE} rows")
        results = evaluate_gift_eval(models, spec, args.datasets_root, args.batch_size, args.device)
    except (FileNotFoundError, ValueError) as exc:
        raise TsmError(str(exc)) from None
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(output, index=False)
    written = [output]
    labels = {c: c.label(spec.properties) for c in spec.configurations}
    for model in models:
        if model == SEASONAL_NAIVE:
            continue  # the baseline is published already
        name = model_display_name(model)
        if args.no_series_check:
            verdict = LeakageVerdict("pretrained", "Unknown", ["the series-level check was skipped"])
        else:
            verdict = leakage_verdict(model, spec.configurations, args.datasets_root, labels)
        rows = results[results["model_path"] == model]
        details = {"multivariate": spec.multivariate, "model_path": model, "leakage": verdict.as_dict(),
                   "benchmark": str(args.benchmark),
                   "configurations": rows[["dataset", "horizon", "windows", "series", "variates", "seasonality",
                                           "multivariate"]].to_dict(orient="records")}
        folder = write_submission(submission_folder(output) / name, rows, submission_config(name, verdict), details)
        written.append(folder)
        print(f"{name}: model_type {verdict.model_type}, testdata_leakage {verdict.testdata_leakage}")
        for reason in verdict.reasons:
            print(f"  {reason}")
    shown = results[["dataset", "model", "eval_metrics/MASE[0.5]", "eval_metrics/mean_weighted_sum_quantile_loss",
                     "multivariate"]].rename(columns=lambda c: c.replace("eval_metrics/", ""))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    status = 0
    if BASELINE in set(results["model"]):
        if published is not None and len(published):
            check = seasonal_naive_check(results, published, args.rtol)
            written.append(output.with_name(output.stem + "-seasonal-naive-check.csv"))
            check.to_csv(written[-1], index=False)
            agree = int(check["agrees"].sum())
            print(f"\nseasonal naive against the published figures (point metrics, rtol {args.rtol:g}): "
                  f"{agree} of {len(check)} configurations agree")
            for row in check[~check["agrees"]].itertuples():
                print(f"  {row.dataset}: largest relative difference {row.max_relative_difference:.3g}; {row.note}")
            if args.check_seasonal_naive and agree < len(check):
                status = 1
        normalised = normalised_scores(results, published, args.rtol)
        board = leaderboard(normalised)
        written.append(output.with_name(output.stem + "-leaderboard.csv"))
        board.to_csv(written[-1], index=False)
        written.append(output.with_name(output.stem + "-normalised.csv"))
        normalised.to_csv(written[-1], index=False)
        if len(board):
            print("\nGIFT-Eval leaderboard (CRPS and MASE over seasonal naive, geometric mean; average CRPS rank):")
            print(format_leaderboard(board[board["group"] != "domain"]))
    print("\nwrote " + ", ".join(map(str, written)))
    return status
