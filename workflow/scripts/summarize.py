"""Rule summarize: the cell summaries -> every table (optbench.reporting.analysis)."""

import sys

from optbench.reporting import analysis, scaling

# Errors and warnings go to the rule's log; the file stays open until exit so
# that a traceback is written there too.
sys.stderr = open(snakemake.log[0], "w", encoding="utf-8")  # noqa: SIM115
tables = analysis.build_tables(
    snakemake.input.cells, snakemake.input.tuning, snakemake.params.context
)
analysis.write_tables(tables, paths={name: snakemake.output[name] for name in tables})
for line in analysis.range_edge_warnings(tables["selection"]):
    print(line, file=sys.stderr)
# Rankings read mid-run that the ends of shorter runs contradict (size/budget axes).
for line in scaling.truncation_warnings(tables["rank_flips"]):
    print(line, file=sys.stderr)
    print(line, file=sys.__stderr__)
# Divergence on the console too (the job's own stderr, which Snakemake shows),
# not only in the log: a diverged run changes the ranking.
for line in analysis.divergence_lines(tables["runs"]):
    print(line, file=sys.stderr)
    print(line, file=sys.__stderr__)
