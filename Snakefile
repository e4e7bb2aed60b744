# tsm: the Chronos-2 training DAG.
#   snakemake --profile profiles/local all                 this machine (CPU ranks)
#   snakemake --profile profiles/a100-cluster all          SLURM, multi-node GPU jobs for training
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/report.html",
    default_target: True
