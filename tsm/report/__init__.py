"""The run report: `tsm report --run-dir results/test --output results/test/report.html` writes one
self-contained HTML file (inline CSS, images as base64 PNGs) with the run summary and resolved configs,
training curves, the benchmark table with aggregate relative scores (in-domain scores marked), in finetune
mode the zero-shot (start) vs. fine-tuned table, forecast fan charts, the data checks and the rules' run
times. Parts missing from the run folder become notes.

Modules: runfiles (reading the run folder, through tsm.records), verdicts (what the report concludes:
verdicts and notes decided from records and results), plots (matplotlib figures), forecasts (fan-chart
data), html (page building blocks), sections (one function per section, rendering only), datachecks (the
data-checks section), regimes (in-domain marks), finetune (zero-shot vs. fine-tuned), build
(`build_report`), cli (`tsm report`; only tsm.cli imports it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report"]


def __getattr__(name: str) -> Any:
    # Lazy: importing tsm.report (as `tsm --help` does, for its CLI module) loads no matplotlib or pandas.
    if name == "build_report":
        from tsm.report.build import build_report

        return build_report
    raise AttributeError(f"module 'tsm.report' has no attribute {name!r}")
