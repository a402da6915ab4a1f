"""Rule summarize: the cell summaries -> step summary, variant selection and leaderboard."""

import sys

from optbench import summary

# Errors and warnings go to the rule's log; the file stays open until exit so
# that a traceback is written there too.
sys.stderr = open(snakemake.log[0], "w", encoding="utf-8")  # noqa: SIM115
summary.summarize(
    snakemake.input.cells,
    snakemake.output.steps,
    snakemake.output.leaderboard,
    snakemake.output.selection,
    snakemake.input.tuning,
)
