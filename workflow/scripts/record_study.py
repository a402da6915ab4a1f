"""Rule record_study: the study's record (optbench.planning.studies.write_record)."""

import sys

from optbench.planning import studies

sys.stderr = open(snakemake.log[0], "w", encoding="utf-8")  # noqa: SIM115
studies.write_record(
    snakemake.output[0],
    snakemake.params.study,
    snakemake.params.config_files,
    snakemake.params.digest,
)
print(f"study {snakemake.params.study}: {snakemake.output[0]}", file=sys.stderr)
