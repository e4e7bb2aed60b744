# GIFT-Eval (benchmark.gift_eval; off when null): every trained model scored on Salesforce/GiftEval's
# configurations beside the seasonal naive baseline, a leaderboard submission folder per model, the ranking
# beside the published models, and (data.source gift-eval-pretrain) the companion pretraining corpus.
# The downloads are local rules: they run where Snakemake runs (the submit node has the internet).
# Paths and helpers: gift_eval_common.smk.
localrules:
    download_gift_eval,
    download_gift_eval_pretrain,


rule download_gift_eval:
    """Salesforce/GiftEval as the hub lays it out (one saved folder per name), only the benchmark file's."""
    output:
        directory(f"{RESULTS}/data/gift-eval"),
    params:
        folders=lambda wildcards: " ".join(gift_eval_folders()),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/download_gift_eval.log",
    shell:
        "tsm data download --root {output} --gift-eval {params.folders} > {log} 2>&1"


rule download_gift_eval_pretrain:
    """Salesforce/GiftEvalPretrain's folders the run trains on, read as they are (saved datasets)."""
    output:
        directory(f"{RESULTS}/data/gift-eval-pretrain"),
    params:
        folders=" ".join((config["data"].get("gift_eval_pretrain") or {}).get("datasets", [])),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/download_gift_eval_pretrain.log",
    shell:
        "tsm data download --root {output} --gift-eval-pretrain {params.folders} > {log} 2>&1"


rule evaluate_gift_eval:
    """One model and the seasonal naive baseline on the benchmark file's configurations: {model}.csv (all
    rows), {model}-leaderboard.csv, {model}-submission/<name>/ (all_results.csv, config.json)."""
    input:
        data=GIFT_EVAL_DATA or [],
        model=evaluated_model_input,
    output:
        scores=f"{RESULTS}/gift-eval/{{model}}.csv",
    wildcard_constraints:
        model=EVALUATED_MODEL_PATTERN,
    params:
        model=evaluated_model,
        benchmark=GIFT_EVAL.get("config"),
        references=gift_eval_references(),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/evaluate_gift_eval_{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_gift_eval_{{model}}.tsv"
    threads: 2
    resources:
        **cpu_job_resources(),
    shell:
        "tsm evaluate --model seasonal-naive --model {params.model} --benchmark {params.benchmark}"
        " --datasets-root {input.data} --output {output.scores} {params.references} > {log} 2>&1"
