# tsm: the Chronos-2 training DAG.
#   snakemake --profile profiles/local all                 this machine (CPU ranks)
#   snakemake --profile profiles/a100-cluster all          SLURM, multi-node GPU jobs for training
#   snakemake --profile profiles/local all --configfile .test/config/config.yaml   the tiny run the tests use
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# snakemake --report: this page's introduction; each report() output has a caption in workflow/report/ too.
report: "workflow/report/workflow.rst"


# common.smk validates the config first (workflow/schemas/config.schema.yaml), as the snakemake-workflows
# template does: the schema's defaults filled in, a bad config refused at parse time naming the key.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/gift_eval_common.smk"
include: "workflow/rules/gift_eval.smk"
include: "workflow/rules/own_data.smk"
include: "workflow/rules/report.smk"


onstart:
    # the cluster settings sbatch needs, checked before anything is submitted (a dry run submits nothing)
    check_slurm_submission()


rule all:
    input:
        f"{RESULTS}/report.html",
    default_target: True
