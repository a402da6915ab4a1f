"""Rule columnar: the study's runs as Parquet tables (optbench.reporting.columnar;
run_files per_job: optbench.reporting.job_columnar, streamed from the job files)."""

import sys
from pathlib import Path

from optbench import joblog
from optbench.reporting import columnar, job_columnar, summary

with joblog.logged_job(snakemake.log[0], "columnar"):
    folder = Path(snakemake.output[0]).parent
    grid = snakemake.params.grid
    runs_table = summary.read_tsv(snakemake.input.runs)
    if "manifests" in grid:
        written = job_columnar.write_tables(grid["manifests"], grid["seeds"], runs_table, folder)
    else:
        runs = columnar.planned_runs(
            grid["cells"],
            grid["seeds"],
            snakemake.params.tsv_pattern,
            snakemake.params.sidecar_pattern,
        )
        # Each table to its output: the rule's outputs are the three files of one folder.
        written = columnar.write_tables(columnar.build_tables(runs, runs_table), folder)
    for path in written:
        print(f"columnar: {path}", file=sys.stderr)
