# Training: stage 1 (pretraining from random init), stage 2 (context extension from stage 1's final
# model), or fine-tuning (mode: finetune). Each writes checkpoints under results/{run}/{stage}/ and
# resumes by itself from the newest one when rerun (after a preemption or a crash); final-checkpoint/
# is the rule's output. The command and the common params come from training_shell/training_params
# (common.smk): each rule states only its inputs and its own trainer flags.


rule train_stage1:
    input:
        **training_inputs(),
        checks=f"{RESULTS}/data-checks/report.json",
    output:
        directory(final_model("stage1")),
    params:
        **training_params("stage1"),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/train_stage1.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_stage1.tsv"
    threads: training_cpus("stage1")
    resources:
        **training_resources("stage1"),
    shell:
        training_shell()


rule train_stage2:
    input:
        **training_inputs(),
        stage1=rules.train_stage1.output,
    output:
        directory(final_model("stage2")),
    params:
        **training_params("stage2"),
        context_length=config["stage2"]["context_length"],
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/train_stage2.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_stage2.tsv"
    threads: training_cpus("stage2")
    resources:
        **training_resources("stage2"),
    shell:
        training_shell("--no-random-init --model-id {input.stage1} --context-length {params.context_length}")


rule finetune:
    input:
        **training_inputs(),
        checks=f"{RESULTS}/data-checks/report.json",
        start=start_model_input,
    output:
        directory(final_model("finetune")),
    params:
        **training_params("finetune"),
    conda:
        "../envs/tsm.yaml"
    log:
        f"{RESULTS}/logs/finetune.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune.tsv"
    threads: training_cpus("finetune")
    resources:
        **training_resources("finetune"),
    shell:
        training_shell()
