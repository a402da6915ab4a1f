"""Rules plot_loss and plot_overview: comparison figures from the step summary."""

import sys

from optbench import figures, summary

# Errors and warnings go to the rule's log; the file stays open until exit so
# that a traceback is written there too.
sys.stderr = open(snakemake.log[0], "w", encoding="utf-8")  # noqa: SIM115
# Each optimizer's selected variant (its only one where nothing is swept).
table = summary.selected_rows(
    figures.read_table(snakemake.input.steps), figures.read_table(snakemake.input.selection)
)
band = snakemake.params.band
if snakemake.rule == "plot_overview":
    figures.plot_overview(table, snakemake.params.panels, band, snakemake.output)
else:
    wildcards = snakemake.wildcards
    figures.plot_loss(table, wildcards.loss, band, snakemake.output, wildcards.problem)
