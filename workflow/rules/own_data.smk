# Your own data (data.source: local): convert it once, split it once before anything trains, then score the
# models per series on its test region. The split (tsm data split) cuts the last horizon x num_windows steps
# of every series off the training folder and writes them, with the series whole, as a fev task over your data
# (SCORED_BENCHMARK, common.smk), which the evaluate rule scores like any benchmark. The fine-tune's validation
# holds out the last prediction_length steps of each training series: the window just before the test region.
#   snakemake --profile profiles/local all --configfile config/finetune-own-data.yaml
include: "own_data_helpers.smk"


# The example's data (config/finetune-own-data.yaml), generated, never fetched: tsm data example-csv.
EXAMPLE_CSV = "data/example/own-data.csv"

if OWN_DATA and OWN["path"] == EXAMPLE_CSV:

    rule example_own_data:
        output:
            EXAMPLE_CSV,
        conda:
            "../envs/tsm.yaml"
        log:
            f"{RESULTS}/logs/example_own_data.log",
        shell:
            "tsm data example-csv --output {output} > {log} 2>&1"


if OWN_DATA and not own_data_is_corpus():

    rule convert_own_data:
        input:
            OWN["path"],
        output:
            directory(f"{RESULTS}/data/own"),
        params:
            format=f"--format {OWN['format']}" if OWN.get("format") else "",
            freq=f"--freq {OWN['freq']}" if OWN.get("freq") else "",
            targets=csv_names("target_columns"),
            past=f"--past-covariates {csv_names('past_covariates')}" if OWN.get("past_covariates") else "",
            known=f"--known-covariates {csv_names('known_covariates')}" if OWN.get("known_covariates") else "",
            id_column=OWN.get("id_column"),
            timestamp_column=OWN.get("timestamp_column"),
        conda:
            "../envs/tsm.yaml"
        log:
            f"{RESULTS}/logs/convert_own_data.log",
        benchmark:
            f"{RESULTS}/benchmarks/convert_own_data.tsv"
        resources:
            **cpu_job_resources(),
        shell:
            "tsm data convert --input {input} --output {output} {params.format} {params.freq}"
            " --id-column {params.id_column} --timestamp-column {params.timestamp_column}"
            " --target-column {params.targets} {params.past} {params.known} > {log} 2>&1"


if OWN_DATA:

    rule split_own_data:
        input:
            own_corpus(),
        output:
            train=directory(f"{OWN_SPLIT}/train"),
            benchmark=directory(f"{OWN_SPLIT}/benchmark"),
            tasks=f"{OWN_SPLIT}/tasks.yaml",
            summary=f"{OWN_SPLIT}/split.json",
        params:
            outdir=lambda wildcards, output: os.path.dirname(output.summary),
            horizon=OWN.get("horizon"),
            windows=OWN.get("num_windows"),
            min_past=OWN.get("min_past"),
            seasonality=own_seasonality(),
            dataset=OWN.get("dataset"),
            targets=csv_names("target_columns"),
            past=f"--past-covariates {csv_names('past_covariates')}" if OWN.get("past_covariates") else "",
            known=f"--known-covariates {csv_names('known_covariates')}" if OWN.get("known_covariates") else "",
        conda:
            "../envs/tsm.yaml"
        log:
            f"{RESULTS}/logs/split_own_data.log",
        benchmark:
            f"{RESULTS}/benchmarks/split_own_data.tsv"
        resources:
            **cpu_job_resources(),
        shell:
            "tsm data split --input {input} --output {params.outdir} --horizon {params.horizon}"
            " --num-windows {params.windows} --min-past {params.min_past} --seasonality {params.seasonality}"
            " --dataset {params.dataset} --target-column {params.targets} {params.past} {params.known} > {log} 2>&1"

    rule own_data_leakage:
        """The series-level leakage check between the training folder and the test windows: the report
        shows it, and a test asserts that no test-window value reached training."""
        input:
            train=f"{OWN_SPLIT}/train",
            benchmark=f"{OWN_SPLIT}/benchmark",
            tasks=f"{OWN_SPLIT}/tasks.yaml",
        output:
            f"{OWN_SPLIT}/leakage.json",
        conda:
            "../envs/tsm.yaml"
        log:
            f"{RESULTS}/logs/own_data_leakage.log",
        resources:
            **cpu_job_resources(),
        shell:
            "tsm leakage --benchmark {input.tasks} --datasets-root {input.benchmark} --corpus {input.train}"
            " --output {output} > {log} 2>&1"

    rule evaluate_own_series:
        """Per series of your test windows: the fine-tuned model, its start, your baselines and seasonal naive
        (win rate, series improved, intervals; the fan charts' series)."""
        input:
            benchmark=f"{OWN_SPLIT}/benchmark",
            tasks=f"{OWN_SPLIT}/tasks.yaml",
            tuned=final_model("finetune"),
            start=start_model_input(),
            baselines=local_baseline_folders(OWN_BASELINES),
        output:
            scores=f"{RESULTS}/own-data/series-scores.csv",
            charts=f"{RESULTS}/own-data/fan-charts.json",
        params:
            models=own_models(),
            outdir=lambda wildcards, output: os.path.dirname(output.scores),
        conda:
            "../envs/tsm.yaml"
        log:
            f"{RESULTS}/logs/evaluate_own_series.log",
        benchmark:
            f"{RESULTS}/benchmarks/evaluate_own_series.tsv"
        threads: 2
        resources:
            **cpu_job_resources(),
        shell:
            "tsm evaluate-series {params.models} --benchmark {input.tasks}"
            " --datasets-root {input.benchmark} --output-dir {params.outdir} > {log} 2>&1"


if OWN_DATA and OWN.get("start_model_config"):

    rule init_start_model:
        """A randomly initialised start where no pretrained model is at hand (data.local.start_model_config)."""
        output:
            directory(START_MODEL),
        params:
            config=OWN["start_model_config"],
            overrides=" ".join(
                f"--set {shlex.quote(f'{key}={yaml_value(value)}')}"
                for key, value in (OWN.get("start_model_overrides") or {}).items()
            ),
        conda:
            "../envs/tsm.yaml"
        log:
            f"{RESULTS}/logs/init_start_model.log",
        resources:
            **cpu_job_resources(),
        shell:
            "tsm init-model --config {params.config} {params.overrides} --output-dir {output} > {log} 2>&1"


if OWN_DATA and OWN.get("public_benchmark"):

    rule evaluate_public:
        """Forgetting: every model on the public benchmark (benchmark.config) too, marked as such."""
        input:
            data=BENCHMARK_DATA,
            model=evaluated_model_input,
        output:
            f"{RESULTS}/benchmark-public/{{model}}.csv",
        wildcard_constraints:
            model=EVALUATED_MODEL_PATTERN,
        params:
            model=evaluated_model,
            benchmark=BENCHMARK,
        conda:
            "../envs/tsm.yaml"
        log:
            f"{RESULTS}/logs/evaluate_public_{{model}}.log",
        threads: 2
        resources:
            **cpu_job_resources(),
        shell:
            "tsm evaluate --model {params.model} --benchmark {params.benchmark} --datasets-root {input.data}"
            " --output {output} > {log} 2>&1"
