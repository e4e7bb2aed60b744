# Corpora: the training corpus (synthetic, or from the hub) and the benchmark datasets, then the data checks.
# The downloads run where Snakemake runs (on a cluster: the submit node, which has the internet that compute
# nodes often lack); the other rules go to the CPU partition (cpu_job_resources, common.smk).


localrules:
    download_train,
    download_eval,


rule synth_train:
    output:
        directory(f"{RESULTS}/data/train"),
    params:
        synth=config["data"]["synth"],
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/synth_train.log",
    benchmark:
        f"{RESULTS}/benchmarks/synth_train.tsv"
    threads: 2
    resources:
        **cpu_job_resources(),
    shell:
        "tsm data synth --output {output} --kind {params.synth[kind]} --num-series {params.synth[num_series]}"
        " --min-length {params.synth[min_length]} --max-length {params.synth[max_length]}"
        " --seed {params.synth[seed]} --workers {threads} > {log} 2>&1"


rule download_train:
    output:
        directory(f"{RESULTS}/data/hub-train"),
    params:
        datasets=" ".join(config["data"].get("hub_datasets", [])),
        repo=config["data"]["hub_repo"],  # its default: the schema's
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/download_train.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_train.tsv"
    shell:
        "tsm data download --root {output} --repo {params.repo} --dataset {params.datasets} > {log} 2>&1"


rule download_eval:
    output:
        directory(BENCHMARK_DATA),
    params:
        command=benchmark_download_command(),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/download_eval.log",
    benchmark:
        f"{RESULTS}/benchmarks/download_eval.tsv"
    shell:
        "({params.command}) > {log} 2>&1"


rule check_data:
    input:
        train=training_data(),
    output:
        report=report(f"{RESULTS}/data-checks/report.json", caption="../report/data-checks.rst", category="Data"),
        summary=f"{RESULTS}/data-checks/summary.txt",
    params:
        corpora=source_corpora_of_input,
        config=config["stage1" if config["mode"] == "pretrain" else "finetune"]["config"],
        # own data: what the fine-tune needs of a training series (min_past, a window, the validation window)
        min_length=f"--min-length {OWN['min_past'] + 2 * OWN['horizon']}" if OWN_DATA else "",
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/check_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/check_data.tsv"
    resources:
        **cpu_job_resources(),
    shell:
        "tsm data check --data {params.corpora} --config {params.config} {params.min_length}"
        " --output {output.report} > {output.summary} 2> {log}"


rule tsmixup_train:
    input:
        training_data(),
    output:
        directory(f"{RESULTS}/data/tsmixup"),
    params:
        corpora=source_corpora_of_input,
        mix=tsmixup_config(),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/tsmixup_train.log",
    benchmark:
        f"{RESULTS}/benchmarks/tsmixup_train.tsv"
    threads: 2
    resources:
        **cpu_job_resources(),
    shell:
        "tsm data tsmixup --input {params.corpora} --output {output} --num-series {params.mix[num_series]}"
        " --max-components {params.mix[max_components]} --alpha {params.mix[alpha]}"
        " --min-length {params.mix[min_length]} --max-length {params.mix[max_length]}"
        " --seed {params.mix[seed]} --workers {threads} > {log} 2>&1"
