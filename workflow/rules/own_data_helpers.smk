# Helpers of own_data.smk (data.source: local): no rules here, as snakemake --lint asks.
# No line here may hold the word rule with a colon after it, or snakemake --lint reports rules mixed with functions.
import os

# OWN (data.local) and OWN_SPLIT are set in common.smk.


def own_data_is_corpus():
    """An Arrow corpus (format arrow, or a folder `datasets` saved: its dataset_info.json) is split as it is;
    a file, or a folder of CSV or Parquet files, is converted first."""
    path = OWN.get("path", "")
    saved = any(os.path.isfile(os.path.join(path, name)) for name in ("dataset_info.json", "dataset_dict.json"))
    return OWN.get("format") == "arrow" or (OWN.get("format") is None and saved)


def own_corpus():
    return OWN["path"] if own_data_is_corpus() else f"{RESULTS}/data/own"


def own_seasonality():
    """MASE's and seasonal naive's season: data.local.seasonality, else the frequency's, else 1."""
    if OWN.get("seasonality"):
        return OWN["seasonality"]
    if OWN.get("freq"):
        from tsm.eval.metrics import seasonality_from_freq

        return seasonality_from_freq(OWN["freq"])
    return 1


def own_models():
    """`tsm evaluate-series` --model items: the fine-tuned model, its start (when it has one), the baselines you
    name (data.local.baselines), seasonal naive."""
    models = ([f"start={START_MODEL}"] if START_MODEL else []) + [f"finetune={final_model('finetune')}"] + [
        f"{name}={model}" for name, model in OWN_BASELINES.items()] + [f"{SEASONAL_NAIVE}={SEASONAL_NAIVE}"]
    return " ".join(f"--model {shlex.quote(model)}" for model in models)


def own_data_report_inputs():
    """What the report's "Your data" section reads (nothing when the run trains on other data)."""
    if not OWN_DATA:
        return []
    files = [f"{OWN_SPLIT}/split.json", f"{OWN_SPLIT}/leakage.json", f"{RESULTS}/own-data/series-scores.csv"]
    if OWN.get("public_benchmark"):
        files += expand(f"{RESULTS}/benchmark-public/{{model}}.csv", model=EVALUATED)
    return files


def csv_names(key):
    return ",".join(OWN.get(key) or [])
