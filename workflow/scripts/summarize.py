"""Rule summarize: across-seed statistics of every run TSV of the grid."""

import sys

from optbench import summary

# Errors and warnings go to the rule's log; the file stays open until exit so
# that a traceback is written there too.
sys.stderr = open(snakemake.log[0], "w", encoding="utf-8")  # noqa: SIM115
runs = [
    summary.RunRef(loss, optimizer, seed, path)
    for (loss, optimizer, seed), path in zip(
        snakemake.params.grid,
        snakemake.input.runs,
        strict=True,
    )
]
summary.summarize(
    runs,
    snakemake.params.steps,
    snakemake.output.steps,
    snakemake.output.leaderboard,
)
