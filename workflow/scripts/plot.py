"""Rules plot_loss and plot_overview: comparison figures from the step summary."""

import sys

from optbench import figures

# Errors and warnings go to the rule's log; the file stays open until exit so
# that a traceback is written there too.
sys.stderr = open(snakemake.log[0], "w", encoding="utf-8")  # noqa: SIM115
table = figures.read_table(snakemake.input.steps)
band = snakemake.params.band
if snakemake.rule == "plot_overview":
    figures.plot_overview(table, snakemake.params.losses, band, snakemake.output)
else:
    figures.plot_loss(table, snakemake.wildcards.loss, band, snakemake.output)
