"""Rule columnar: the study's runs as Parquet tables (optbench.reporting.columnar)."""

import sys
from pathlib import Path

from optbench import joblog
from optbench.reporting import columnar, summary

with joblog.logged_job(snakemake.log[0], "columnar"):
    runs = columnar.planned_runs(
        snakemake.params.grid["cells"],
        snakemake.params.grid["seeds"],
        snakemake.params.tsv_pattern,
        snakemake.params.sidecar_pattern,
    )
    tables = columnar.build_tables(runs, summary.read_tsv(snakemake.input.runs))
    # Each table to its output: the rule's outputs are the three files of one folder.
    for path in columnar.write_tables(tables, Path(snakemake.output[0]).parent):
        print(f"columnar: {path}", file=sys.stderr)
