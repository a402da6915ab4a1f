"""Rule summarize: the cell summaries -> every table (optbench.reporting.analysis),
each table's page for the report (tablepages) and the study's answer (answer)."""

import sys

from optbench import joblog, runfiles
from optbench.reporting import analysis, answer, scaling, tablepages

# Errors and warnings go to the rule's log (a failure's reason to the console too).
with joblog.logged_job(snakemake.log[0], "summary") as console:
    tables = analysis.build_tables(
        snakemake.input.cells, snakemake.input.tuning, snakemake.params.context
    )
    analysis.write_tables(tables, paths={name: snakemake.output[name] for name in tables})
    tablepages.write_pages(
        {name: snakemake.output[name] for name in tables},
        {name: snakemake.output[f"page_{name}"] for name in tables},
    )
    headlines = answer.headlines(tables)
    runfiles.write_text_atomic(snakemake.output.answer_text, answer.to_rst(headlines))
    runfiles.write_text_atomic(snakemake.output.answer, answer.to_html(headlines))
    # In the log, and on the console: a tuned setting at its range's edge is
    # something to fix before reading the answer.
    for line in analysis.range_edge_warnings(tables["selection"]):
        print(line, file=sys.stderr)
        print(line, file=console)
    # Rankings read mid-run that the ends of shorter runs contradict (size and
    # budget axes): a comparison read off truncated runs would mislead.
    for line in scaling.truncation_warnings(tables["rank_flips"]):
        print(line, file=sys.stderr)
        print(line, file=console)
    # Divergence on the console too, not only in the log: a diverged run changes
    # the ranking.
    for line in analysis.divergence_lines(tables["runs"]):
        print(line, file=sys.stderr)
        print(line, file=console)
