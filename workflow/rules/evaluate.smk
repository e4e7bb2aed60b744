# Benchmark evaluation (WQL, MASE) of each trained model and of the seasonal naive baseline.


rule evaluate:
    input:
        data=BENCHMARK_DATA,
        model=lambda wildcards: [] if wildcards.model == "seasonal-naive" else [final_model(wildcards.model)],
    output:
        report(f"{RESULTS}/benchmark/{{model}}.csv", category="Benchmark"),
    wildcard_constraints:
        model="stage1|stage2|finetune|seasonal-naive",
    params:
        model=lambda wildcards, input: input.model[0] if input.model else "seasonal-naive",
        benchmark=BENCHMARK,
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/evaluate_{{model}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_{{model}}.tsv"
    threads: 2
    shell:
        "tsm evaluate --model {params.model} --benchmark {params.benchmark} --datasets-root {input.data}"
        " --output {output} > {log} 2>&1"
