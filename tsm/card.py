"""Model cards: the `README.md` of every model folder tsm writes, in the Hugging Face convention.

The metadata block (YAML front matter, written by huggingface_hub's `ModelCardData`) says library
(chronos-forecasting, which loads the folder), pipeline tag, license, tags, the hub datasets and base model
when they are hub ids; the body gives the architecture (from `config.json`), the training stages and their
corpora (from `training-provenance.json`, own and inherited) and, when given, benchmark scores with their
regime (in-domain or zero-shot, as `tsm evaluate` wrote them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tsm.atomic import write_text
from tsm.eval.metrics import aggregate_relative
from tsm.hub import is_hub_id
from tsm.layout import MODEL_CONFIG, SEASONAL_NAIVE
from tsm.provenance import RANDOM_INIT, read_provenance

CARD_FILE = "README.md"
LICENSE = "apache-2.0"  # Chronos-2's own license; a user pushing under another one edits the card
TAGS = ["time series", "forecasting", "chronos-2", "foundation models", "tsm"]


def _metadata(provenance: dict[str, Any] | None) -> str:
    from huggingface_hub import ModelCardData

    corpora = [*(provenance or {}).get("corpora", []), *(provenance or {}).get("inherited", [])]
    hub_datasets = sorted({c["hub_repo"] for c in corpora if c.get("hub_repo")})
    start = (provenance or {}).get("start_model")
    data = ModelCardData(
        library_name="chronos-forecasting", pipeline_tag="time-series-forecasting", license=LICENSE, tags=TAGS,
        datasets=hub_datasets or None, base_model=start if start and is_hub_id(start) else None,
    )
    return data.to_yaml()


def _architecture(config: dict[str, Any]) -> list[str]:
    chronos = config.get("chronos_config", {})
    quantiles = chronos.get("quantiles", [])
    return [
        "| | |", "|---|---|",
        f"| Layers | {config.get('num_layers', '?')} |",
        f"| d_model / d_ff / heads | {config.get('d_model', '?')} / {config.get('d_ff', '?')} / "
        f"{config.get('num_heads', '?')} |",
        f"| Context length | {chronos.get('context_length', '?')} |",
        f"| Patch size (input / output) | {chronos.get('input_patch_size', '?')} / "
        f"{chronos.get('output_patch_size', '?')} |",
        f"| Longest horizon in one pass | {chronos.get('max_output_patches', 0) * chronos.get('output_patch_size', 0)}"
        " steps |",
        f"| Quantiles | {len(quantiles)}: {', '.join(f'{q:g}' for q in quantiles)} |",
    ]


def _corpus_line(corpus: dict[str, Any]) -> str:
    rows = f"{corpus['rows']:,} series" if isinstance(corpus.get("rows"), int) else "size unknown"
    share = f", probability {corpus['probability']:.3g}" if isinstance(corpus.get("probability"), float) else ""
    fingerprint = f", `{corpus['fingerprint']}`" if corpus.get("fingerprint") else ""
    return f"- `{corpus.get('name', '?')}`: {rows}{share}{fingerprint}"


def _training(provenance: dict[str, Any] | None) -> list[str]:
    if provenance is None:
        return ["No `training-provenance.json` in this folder: the training data is unknown."]
    start = provenance.get("start_model", "?")
    lines = [f"This folder is **{provenance.get('stage', '?')}** at step {provenance.get('step', '?'):,}, "
             f"started from {'a random initialisation' if start == RANDOM_INIT else f'`{start}`'}, "
             f"trained with tsm {provenance.get('tsm_version', '?')}."]
    corpora = provenance.get("corpora", [])
    if corpora:
        lines += ["", "Its corpora:", *(_corpus_line(c) for c in corpora)]
    inherited = provenance.get("inherited", [])
    stages: dict[str, list[dict[str, Any]]] = {}
    for corpus in inherited:
        stages.setdefault(str(corpus.get("from_stage", "an earlier stage")), []).append(corpus)
    for stage, own in stages.items():
        lines += ["", f"Inherited from {stage}:", *(_corpus_line(c) for c in own)]
    if provenance.get("start_provenance") == "missing":
        lines += ["", "The starting model has no provenance file: what it was trained on is unknown."]
    return lines


def _scores(scores: pd.DataFrame) -> list[str]:
    """This model's rows; with seasonal naive's rows beside them, the ratios and their geometric mean."""
    models = scores["model"] if "model" in scores else pd.Series(["model"] * len(scores))
    naive = scores[models == SEASONAL_NAIVE].set_index("dataset")
    own = scores[models != SEASONAL_NAIVE]
    if "model" in own and own["model"].nunique() > 1:
        raise ValueError(f"the scores hold several models ({', '.join(map(str, own['model'].unique()))}); give this "
                         f"model's CSV (and {SEASONAL_NAIVE}.csv)")
    relative = not naive.empty and set(own["dataset"]) <= set(naive.index)
    has_regime = "regime" in own
    header = "| Dataset | WQL | MASE |" + (" WQL / naive | MASE / naive |" if relative else "") + (
        " Regime |" if has_regime else "")
    lines = [header, "|---|---:|---:|" + ("---:|---:|" if relative else "") + ("---|" if has_regime else "")]
    for row in own.itertuples():
        ratios = (f" {row.WQL / naive.loc[row.dataset, 'WQL']:.3f} | {row.MASE / naive.loc[row.dataset, 'MASE']:.3f} |"
                  if relative else "")
        lines.append(f"| {row.dataset} | {row.WQL:.4f} | {row.MASE:.4f} |{ratios}"
                     + (f" {row.regime} |" if has_regime else ""))
    if relative:
        aggregate = {metric: aggregate_relative(own.set_index("dataset")[metric].to_dict(), naive[metric].to_dict())
                     for metric in ("WQL", "MASE")}
        lines += ["", f"Aggregate relative to seasonal naive (geometric mean over {len(own)} datasets): "
                      f"WQL {aggregate['WQL']:.3f}, MASE {aggregate['MASE']:.3f}."]
    if has_regime and (own["regime"] == "in-domain").any():
        lines += ["", "In-domain rows: the model was trained on that dataset; they are not zero-shot scores."]
    return lines


def model_card(folder: str | Path, scores: pd.DataFrame | None = None, name: str | None = None) -> str:
    """The model card of a model folder; `scores`: rows (dataset, WQL, MASE[, regime]) of this model."""
    folder = Path(folder)
    config = json.loads((folder / MODEL_CONFIG).read_text())
    provenance = read_provenance(folder)
    title = name or f"{(provenance or {}).get('stage') or folder.resolve().name} (Chronos-2, trained with tsm)"
    lines = [
        "---", _metadata(provenance).rstrip("\n"), "---", "", f"# {title}", "",
        "A Chronos-2 time-series forecasting model (encoder-only transformer over patches, group attention "
        "across related series, a quantile head), trained with tsm. It loads with the `chronos-forecasting` "
        "package:", "",
        "```python",
        "from chronos import Chronos2Pipeline",
        "pipeline = Chronos2Pipeline.from_pretrained(\"<this folder or repo>\")",
        "quantiles, mean = pipeline.predict_quantiles([series], prediction_length=24, quantile_levels=[0.1, 0.5, 0.9])",
        "```", "", "## Architecture", "", *_architecture(config), "", "## Training", "", *_training(provenance),
    ]
    if scores is not None and len(scores):
        lines += ["", "## Benchmark scores", "",
                  "WQL over quantiles 0.1-0.9 and MASE of the median, as the Chronos papers compute them "
                  "(`tsm evaluate`).", "", *_scores(scores)]
    return "\n".join(lines) + "\n"


def read_scores(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Rows of `tsm evaluate` CSVs (several models' rows are kept apart by the caller)."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"scores file {path}: could not be read ({exc})") from None
        missing = {"dataset", "WQL", "MASE"} - set(frame.columns)
        if missing:
            raise ValueError(f"scores file {path}: no column(s) {sorted(missing)}; expected a `tsm evaluate` CSV "
                             "(dataset, model, MASE, WQL, ...)")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_model_card(folder: str | Path, scores: pd.DataFrame | None = None, name: str | None = None) -> Path:
    return write_text(Path(folder) / CARD_FILE, model_card(folder, scores, name))
