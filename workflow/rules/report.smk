# The HTML report: run summary, training curves, benchmark table, fan charts, data checks, rule times.


rule report:
    input:
        evaluations=expand(f"{RESULTS}/benchmark/{{model}}.csv", model=EVALUATED),
        fev=expand(f"{RESULTS}/benchmark-fev/{{model}}-fev-summaries.csv", model=EVALUATED if FEV else []),
        gift_eval=GIFT_EVAL_OUTPUTS,
        models=[final_model(stage) for stage in STAGES],
        checks=f"{RESULTS}/data-checks/report.json",
        data=SCORED_DATA,
        own=own_data_report_inputs(),
    output:
        report(f"{RESULTS}/report.html", caption="../report/report.rst", category="Report"),
    params:
        run_dir=lambda wildcards, output: os.path.dirname(output[0]),
        benchmark=SCORED_BENCHMARK,
        references=" ".join(FEV.get("reference_results", [])),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    resources:
        **cpu_job_resources(),
    shell:
        "tsm report --run-dir {params.run_dir} --output {output} --benchmark {params.benchmark}"
        " --datasets-root {input.data} --reference-results {params.references} > {log} 2>&1"
