# GIFT-Eval's paths and helpers, for the rules in gift_eval.smk. No line here may hold the word rule with a colon
# after it, or snakemake --lint reports rules mixed with functions.
from tsm.eval.gift_eval.protocol import load_benchmark_spec

GIFT_EVAL = config["benchmark"].get("gift_eval") or {}
GIFT_EVAL_DATA = (GIFT_EVAL.get("root") or f"{RESULTS}/data/gift-eval") if GIFT_EVAL else None
# The trained models (and a fine-tune's start); the baseline is scored inside each job, beside each model.
GIFT_EVAL_MODELS = [name for name in EVALUATED if name != SEASONAL_NAIVE] if GIFT_EVAL else []
GIFT_EVAL_OUTPUTS = expand(f"{RESULTS}/gift-eval/{{model}}.csv", model=GIFT_EVAL_MODELS)


def gift_eval_folders():
    """The Salesforce/GiftEval folders the benchmark file names (what the download fetches)."""
    return sorted({c.name for c in load_benchmark_spec(GIFT_EVAL["config"]).configurations})


def gift_eval_references():
    """`--reference-results` and its files: none given means tsm's copies of the published results."""
    paths = GIFT_EVAL.get("reference_results")
    return "" if paths is None else "--reference-results " + " ".join(shlex.quote(p) for p in paths)
