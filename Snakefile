# Optimizer comparison: optimizer x loss x seed grid -> per-run loss TSVs ->
# across-seed summaries -> comparison figures. This file only wires; the
# configuration is validated in workflow/rules/common.smk.
from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default experiment. A user's --configfile replaces it
# rather than being merged over it (Snakemake's own behaviour), so a config
# file runs exactly the grid it describes; several --configfile files still
# merge in order, and --config still merges over whichever config is used.
# Keys missing from a user's file take the schema's defaults (settings.py).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


# The report's landing page: what was compared and where to start reading.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/summarize.smk"
include: "workflow/rules/plot.smk"
include: "workflow/rules/study.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
