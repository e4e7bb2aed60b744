"""The in-domain marks of the report's score tables: a score whose model was trained on the dataset (the
`regime` column `tsm evaluate` writes, from the model's training provenance) gets a † and a plain sentence
saying so; a model without provenance gets a ?."""

from __future__ import annotations

import pandas as pd

from tsm.report import html as h

IN_DOMAIN_MARK, UNKNOWN_MARK = "†", "?"


def regime_by_cell(results: pd.DataFrame) -> dict[tuple[str, str], tuple[str, str]]:
    """{(dataset, model): (regime, reason)} from the CSVs' regime columns (empty for older files)."""
    if "regime" not in results:
        return {}
    reasons = results["regime_reason"] if "regime_reason" in results else [""] * len(results)
    return {(d, m): (str(r), str(why)) for d, m, r, why in zip(results["dataset"], results["model"],
                                                              results["regime"], reasons, strict=True)}


def regime_mark(regime: str, reason: str) -> str:
    """The small mark after a score: † in-domain (trained on this dataset), ? unknown (no provenance)."""
    mark = {"in-domain": IN_DOMAIN_MARK, "unknown": UNKNOWN_MARK}.get(regime)
    if mark is None:
        return ""
    return f'<sup class="regime {h.esc(regime)}" title="{h.esc(regime)}: {h.esc(reason)}">{mark}</sup>'


def regime_notes(regimes: dict[tuple[str, str], tuple[str, str]]) -> list[str]:
    """Plain sentences under the scores: which scores are in-domain (and why), and which are unknown."""
    in_domain = [(d, m, why) for (d, m), (r, why) in regimes.items() if r == "in-domain"]
    unknown = sorted({m for (_, m), (r, _) in regimes.items() if r == "unknown"})
    parts = []
    if in_domain:
        items = "".join(f"<li><b>{h.esc(m)}</b> on <b>{h.esc(d)}</b>: {h.esc(why)}</li>" for d, m, why in in_domain)
        parts.append(f'<p class="regime-note">{IN_DOMAIN_MARK} <b>In-domain, not zero-shot:</b> {len(in_domain)} '
                     "score(s) are on data the model was trained on (its training provenance lists a corpus with "
                     "the dataset's name or content), so they overstate how the model does on unseen data. The "
                     f'aggregate relative scores include them.</p><ul class="messages">{items}</ul>')
    else:
        parts.append('<p class="caption">No score is in-domain: no model\'s recorded training data includes a '
                     "benchmark dataset (by name or content fingerprint).</p>"
                     if any(r for r, _ in regimes.values()) else "")  # CSVs from before the regime column: silent
    if unknown:
        parts.append(f'<p class="regime-note">{UNKNOWN_MARK} No training provenance for {h.esc(", ".join(unknown))}: '
                     "whether those scores are zero-shot is unknown.</p>")
    return [part for part in parts if part]
