"""Rule explorer: the report's interactive explorer page (optbench.reporting.explorer)."""

from optbench import joblog
from optbench.reporting import explorer, outputs

with joblog.logged_job(snakemake.log[0], "explorer"):
    explorer.write_explorer(
        snakemake.output[0],
        {"evaluation": list(snakemake.input.evaluation), "tuning": list(snakemake.input.tuning)},
        {name: snakemake.input[name] for name in outputs.EXPLORER_TABLES},
        snakemake.params.band,
        snakemake.params.title,
    )
