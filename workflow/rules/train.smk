# Training: stage 1 (pretraining from random init), stage 2 (context extension from stage 1's final
# model), or fine-tuning (mode: finetune). Each writes checkpoints under results/{run}/{stage}/ and
# resumes by itself from the newest one when rerun (after a preemption or a crash); final-checkpoint/
# is the rule's output.


rule train_stage1:
    input:
        data=training_data(),
        validation=f"{RESULTS}/validation/report.json",
    output:
        directory(final_model("stage1")),
    params:
        launch=launch_command,
        config=config["stage1"]["config"],
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
        overrides=overrides("stage1"),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/train_stage1.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_stage1.tsv"
    threads: training_threads()
    resources:
        **training_resources(),
    shell:
        "{params.launch} --config {params.config} --set 'training_data_paths=[{input.data}]'"
        " --set probability=null --output-dir {params.outdir} {params.overrides} > {log} 2>&1"


rule train_stage2:
    input:
        data=training_data(),
        stage1=rules.train_stage1.output,
    output:
        directory(final_model("stage2")),
    params:
        launch=launch_command,
        config=config["stage2"]["config"],
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
        context_length=config["stage2"]["context_length"],
        overrides=overrides("stage2"),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/train_stage2.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_stage2.tsv"
    threads: training_threads()
    resources:
        **training_resources(),
    shell:
        "{params.launch} --config {params.config} --no-random-init --model-id {input.stage1}"
        " --context-length {params.context_length} --set 'training_data_paths=[{input.data}]'"
        " --set probability=null --output-dir {params.outdir} {params.overrides} > {log} 2>&1"


rule finetune:
    input:
        data=training_data(),
        validation=f"{RESULTS}/validation/report.json",
        start=start_model_input,
    output:
        directory(final_model("finetune")),
    params:
        launch=launch_command,
        config=config["finetune"]["config"],
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
        overrides=overrides("finetune"),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/finetune.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune.tsv"
    threads: training_threads()
    resources:
        **training_resources(),
    shell:
        "{params.launch} --config {params.config} --set 'training_data_paths=[{input.data}]'"
        " --set probability=null --output-dir {params.outdir} {params.overrides} > {log} 2>&1"
