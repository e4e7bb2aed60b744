"""The report's data-checks section: the typed report of `tsm data check` (tsm.records.DataCheckReport) as
a verdict, one row per corpus, the corpora's messages and every figure, and the printed summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tsm.layout import DATA_CHECK_REPORT, DATA_CHECK_SUMMARY, DATA_CHECKS
from tsm.records import DataCheckReport, DatasetCheck, Range
from tsm.report import html as h
from tsm.report.runfiles import DataChecks
from tsm.report.verdicts import data_check_verdict


def data_checks_section(checks: DataChecks | None, run_dir: Path) -> h.Section:
    anchor, title, folder = "data-checks", "Data checks", run_dir / DATA_CHECKS
    if checks is None or (checks.report is None and checks.summary is None and checks.error is None):
        return h.Section(anchor, title, h.note(f"No data checks ({folder}/{DATA_CHECK_REPORT} and "
                                               f"{DATA_CHECK_SUMMARY} are missing; `tsm data check` writes them)."))
    body = []
    if checks.error is not None:
        body.append(h.note(f"Could not read the data-check report: {checks.error}"))
    elif checks.report is None:
        body.append(h.note(f"{folder}/{DATA_CHECK_REPORT} is missing."))
    else:
        body += data_check_tables(checks.report, run_dir)
    if checks.summary is None:
        body.append(h.note(f"{folder}/{DATA_CHECK_SUMMARY} is missing."))
    else:
        body.append(f"<h3>{DATA_CHECK_SUMMARY}</h3>" + h.pre(checks.summary, "block"))
    return h.Section(anchor, title, "\n".join(body))


# (column, how to show it) for the per-corpus table; "–" where a corpus could not be read that far
_CHECK_COLUMNS: tuple[tuple[str, Callable[[DatasetCheck], Any]], ...] = (
    ("Series", lambda d: d.num_series),
    ("Usable", lambda d: d.series and d.series.usable),
    ("Too short", lambda d: d.series and d.series.too_short),
    ("Empty", lambda d: d.series and d.series.empty),
    ("All NaN", lambda d: d.series and d.series.all_nan),
    ("Constant", lambda d: d.series and d.series.constant),
    ("With NaN", lambda d: d.series and d.series.with_nan),
    ("With inf", lambda d: d.series and d.series.with_inf),
    ("Length min", lambda d: d.length and d.length.min),
    ("Median", lambda d: d.length and d.length.median),
    ("Max", lambda d: d.length and d.length.max),
    ("NaN values", lambda d: d.target and _percent(d.target.nan_fraction)),
    ("Variates", lambda d: d.target and _range(d.target.variates)),
    ("Errors", lambda d: len(d.errors)),
    ("Warnings", lambda d: len(d.warnings)),
)


def data_check_tables(report: DataCheckReport, run_dir: Path | None = None) -> list[str]:
    """The verdict, one row per corpus with its main figures, the corpora's errors and warnings in full, and
    the remaining figures (length percentiles, values, covariates, column types) in a collapsed table.
    Corpora inside the run folder are named relative to it."""
    if not report.datasets:
        return [h.note("The data-check report lists no corpus.")]
    names = [_relative_name(d.dataset, run_dir) for d in report.datasets]
    verdict = data_check_verdict(report, names)
    parts = [h.headline(verdict.text, verdict.beat)]
    num = "num"
    parts.append(h.table(
        ["Corpus", "OK", *[h.Cell(h.esc(title), num) for title, _ in _CHECK_COLUMNS]],
        [[h.Cell(f"<b>{h.esc(name)}</b>"), h.Cell("yes" if d.ok else "no", "" if d.ok else "flag-bad")]
         + [h.Cell(_figure(show(d)), num) for _, show in _CHECK_COLUMNS]
         for name, d in zip(names, report.datasets, strict=True)]))
    messages = [f"<li><b>{h.esc(name)}</b> ({kind}): {h.esc(text)}</li>"
                for name, d in zip(names, report.datasets, strict=True)
                for kind, texts in (("error", d.errors), ("warning", d.warnings)) for text in texts]
    if messages:
        parts.append(f'<ul class="messages">{"".join(messages)}</ul>')
    details = _check_details(report.datasets)
    parts.append(h.details(f"All figures per corpus ({len(details)})", h.table(
        ["Figure"] + [h.Cell(h.esc(name), num) for name in names],
        [[h.esc(figure)] + [h.Cell(_figure(value), num) for value in values] for figure, values in details.items()])))
    return parts


def _check_details(datasets: Sequence[DatasetCheck]) -> dict[str, list[Any]]:
    """Figure name -> its value per corpus (None where a corpus has no such figure)."""
    rows: dict[str, list[Any]] = {}

    def add(figure: str, index: int, value: Any) -> None:
        rows.setdefault(figure, [None] * len(datasets))[index] = value

    for i, d in enumerate(datasets):
        if d.length is not None:
            for key in ("min", "p5", "median", "p95", "max", "mean"):
                add(f"length {key}", i, getattr(d.length, key))
        if d.series is not None:
            for key, value in vars(d.series).items():
                add(f"series {key.replace('_', ' ')}", i, value)
        for column, stats in d.value_columns.items():
            add(f"{column} variates", i, _range(stats.variates))
            add(f"{column} values", i, stats.values)
            add(f"{column} NaN", i, f"{stats.nan:,} ({_percent(stats.nan_fraction)})")
            add(f"{column} inf", i, f"{stats.inf:,} ({_percent(stats.inf_fraction)})")
            add(f"{column} float32 overflow", i, stats.float32_overflow)
        for column, kind in d.schema.items():
            add(f"{column} type", i, kind)
        add("checked in (s)", i, d.seconds)
        add("series per second", i, d.series_per_second)
    return rows


def _percent(fraction: float) -> str:
    return f"{fraction:.2%}"


def _range(r: Range) -> str:
    return f"{r.min}" if r.min == r.max else f"{r.min}–{r.max}"


def _figure(value: Any) -> str:
    """A figure as text: counts with thousands separators, other numbers as written, "–" when missing."""
    if value is None:
        return "–"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return h.esc(value)


def _relative_name(name: str, run_dir: Path | None) -> str:
    if run_dir is None:
        return name
    for base in (run_dir, run_dir.resolve()):
        try:
            return str(Path(name).relative_to(base))
        except ValueError:
            continue
    return name
