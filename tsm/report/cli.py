"""`tsm report`: the HTML report of a run folder."""

from __future__ import annotations

import argparse

from tsm.config import TsmError


def _report(args: argparse.Namespace) -> int:
    from tsm.report.build import DEFAULT_BENCHMARK, build_report

    try:
        output = build_report(args.run_dir, args.output or f"{args.run_dir}/report.html",
                              benchmark=args.benchmark or DEFAULT_BENCHMARK, datasets_root=args.datasets_root,
                              series_per_dataset=args.series_per_dataset,
                              reference_results=args.reference_results)
    except (FileNotFoundError, ValueError) as exc:  # no run folder, bad count
        raise TsmError(str(exc)) from None
    print(f"wrote {output}")
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write a run's self-contained HTML report",
                       description="Write one self-contained HTML file for a run folder: summary and configs, "
                                   "training curves, benchmark scores, forecast fan charts, data checks "
                                   "and rule run times. Missing parts are noted, not fatal.")
    p.add_argument("--run-dir", required=True, help="the run folder, e.g. results/test")
    p.add_argument("--output", help="the HTML file to write (default: <run-dir>/report.html)")
    p.add_argument("--benchmark", help="benchmark YAML whose windows the fan charts show "
                                       "(default: config/benchmarks/lite-offline.yaml)")
    p.add_argument("--datasets-root", help="folder of the benchmark datasets (default: <run-dir>/data/benchmarks)")
    p.add_argument("--series-per-dataset", type=int, default=3, help="fan-chart windows per dataset")
    p.add_argument("--reference-results", nargs="*", default=[], metavar="CSV",
                   help="published fev summaries (config/benchmarks/fev/published/) that the leaderboard of the run's "
                        "fev tasks (benchmark-fev/) ranks beside this run's models")
    p.set_defaults(func=_report)
