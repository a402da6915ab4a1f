# Optimizer comparison: optimizer x loss x seed grid -> per-run loss TSVs ->
# across-seed summaries -> comparison figures. This file only wires; the
# configuration is validated in workflow/rules/common.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/summarize.smk"
include: "workflow/rules/plot.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
