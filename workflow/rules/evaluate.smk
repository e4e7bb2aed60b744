# Benchmark evaluation (WQL, MASE) of each trained model, of the seasonal naive baseline and, in finetune mode,
# of the starting model as it is (`start`: the zero-shot side of the report's zero-shot vs. fine-tuned table).


rule evaluate:
    input:
        data=BENCHMARK_DATA,
        model=evaluated_model_input,
    output:
        report(f"{RESULTS}/benchmark/{{model}}.csv", category="Benchmark"),
    wildcard_constraints:
        model="stage1|stage2|finetune|start|seasonal-naive",
    params:
        model=evaluated_model,
        benchmark=BENCHMARK,
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
