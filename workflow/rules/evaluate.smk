# Benchmark evaluation (WQL, MASE) of each trained model, of the seasonal naive baseline and, in finetune mode,
# of the starting model as it is (`start`: the zero-shot side of the report's zero-shot vs. fine-tuned table).


rule evaluate:
    input:
        data=SCORED_DATA,
        model=evaluated_model_input,
    output:
        report(f"{RESULTS}/benchmark/{{model}}.csv", caption="../report/benchmark.rst", category="Benchmark"),
    wildcard_constraints:
        model=EVALUATED_MODEL_PATTERN,
    params:
        model=evaluated_model,
        benchmark=SCORED_BENCHMARK,
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/evaluate_{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_{{model}}.tsv"
    threads: 2
    resources:
        **cpu_job_resources(),
    shell:
        "tsm evaluate --model {params.model} --benchmark {params.benchmark} --datasets-root {input.data}"
        " --output {output} > {log} 2>&1"


rule evaluate_fev:
    """The same models on fev's own task definitions, through fev; writes {model}-fev-summaries.csv beside, in
    fev's format. The tasks' data come from the benchmark folder only (download_eval fetched them where
    Snakemake runs): a compute node may have no internet, so the job is offline (HF_HUB_OFFLINE=1) and a task
    whose data is missing stops it in seconds, naming the command that fetches it."""
    input:
        data=BENCHMARK_DATA,
        model=evaluated_model_input,
    output:
        scores=f"{RESULTS}/benchmark-fev/{{model}}.csv",
        summaries=f"{RESULTS}/benchmark-fev/{{model}}-fev-summaries.csv",
    wildcard_constraints:
        model=EVALUATED_MODEL_PATTERN,
    params:
        model=evaluated_model,
        tasks=FEV.get("tasks"),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/evaluate_fev_{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_fev_{{model}}.tsv"
    threads: 2
    resources:
        **cpu_job_resources(),
    shell:
        # One model per job: the report ranks them together (and beside the published results).
        "HF_HUB_OFFLINE=1 tsm evaluate --model {params.model} --benchmark {params.tasks} --datasets-root {input.data}"
        " --output {output.scores} --reference-results > {log} 2>&1"
