# Training corpora.


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
    shell:
        "tsm data synth --output {output} --kind {params.synth[kind]} --num-series {params.synth[num_series]}"
        " --min-length {params.synth[min_length]} --max-length {params.synth[max_length]}"
        " --seed {params.synth[seed]} --workers {threads} > {log} 2>&1"
