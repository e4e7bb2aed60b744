# tsm: the Chronos-2 training DAG. `snakemake --profile profiles/local all` runs it on this machine.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"


rule all:
    input:
        final_model("stage2"),
    default_target: True
