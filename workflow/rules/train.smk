# Training jobs. A job runs as a plain command rather than through script:, so
# it imports torch and the standard library only (Snakemake's script preamble
# would import Snakemake itself into every job).
#
# Packing (config job_scope and seeds_per_job = K). A job holds a range of
# seed values (0..K-1, K..2K-1, ...; all: one range) of the cells of its scope:
# one cell, all variants of an optimizer, every optimizer of a (problem, loss),
# or a whole problem. job_scope cell with K = 1 is the one generic rule
# `train`, one job per run. Snakemake rules cannot derive a variable output
# list from a wildcard, so the other layouts generate rules: job_scope cell,
# one rule per seed range, keeping the {problem}, {loss}, {optimizer} and
# {variant} wildcards (one rule node per range); coarser scopes, one rule per
# job (their cells differ from job to job), named after the job's key and
# seed range, e.g. train_linear_mse_seeds_0-9. Ranges follow seed values, not
# positions, so adding a seed re-runs only the range it falls in. A packed
# job's command names its cells and seeds once and the path patterns, never
# every path (common.smk job_argument). Every job writes a manifest of its runs
# last (<study folder>/manifests/train/...: what each TSV held, which finds a
# run changed by hand, common.smk); the summary jobs of coarser scopes take it
# as input instead of thousands of run files. The command lines are in
# common.smk.
#
# The runs are update() outputs: Snakemake leaves the previous runs in place
# while their job re-runs (train.py replaces each file atomically) and, if
# the job fails, puts the previous version of every file back (from copies in
# .snakemake/backups), so a failed re-run loses no valid result.


if EXPERIMENT.job_scope == "cell" and EXPERIMENT.seeds_per_job == 1:

    rule train:
        output:
            tsv=update(RUN_TSV),
            sidecar=update(RUN_SIDECAR),
            manifest=update(cell_job_file("manifests", "seed{seed}", ".tsv")),
        log:
            cell_job_file("logs", "seed{seed}", ".log"),
        benchmark:
            cell_job_file("benchmarks", "seed{seed}", ".tsv")
        conda:
            TRAIN_ENV
        threads: 1
        resources:
            gpu=TRAINING_GPUS,
        params:
            spec=cell_spec,
        shell:
            COMMANDS.train_one_seed

elif EXPERIMENT.job_scope == "cell":

    for seed_range in SEED_RANGES:

        rule:
            name:
                f"train_seeds_{seed_range.label}"
            output:
                tsv=update(expand(RUN_TSV, seed=seed_range.seeds, allow_missing=True)),
                sidecar=update(expand(RUN_SIDECAR, seed=seed_range.seeds, allow_missing=True)),
                manifest=update(cell_job_file("manifests", f"seeds{seed_range.label}", ".tsv")),
            log:
                cell_job_file("logs", f"seeds{seed_range.label}", ".log"),
            benchmark:
                cell_job_file("benchmarks", f"seeds{seed_range.label}", ".tsv")
            conda:
                TRAIN_ENV
            threads: 1
            resources:
                gpu=TRAINING_GPUS,
            params:
                # A default argument binds this range's seeds now; a plain
                # reference to `seed_range` would see the loop's last value.
                job=lambda wildcards, seeds=seed_range.seeds: range_job_argument(wildcards, seeds),
            shell:
                COMMANDS.train_packed

else:

    for job in TRAINING_JOBS:

        rule:
            name:
                job.rule_name()
            output:
                tsv=update(
                    [
                        RUN_TSV.format(seed=seed, **vars(cell))
                        for cell in job.cells
                        for seed in job.seeds
                    ]
                ),
                sidecar=update(
                    [
                        RUN_SIDECAR.format(seed=seed, **vars(cell))
                        for cell in job.cells
                        for seed in job.seeds
                    ]
                ),
                manifest=update(job.log("manifests", ".tsv")),
            log:
                job.log(),
            benchmark:
                job.log("benchmarks", ".tsv")
            conda:
                TRAIN_ENV
            threads: 1
            resources:
                gpu=TRAINING_GPUS,
            params:
                # A function: a plain string would be formatted as a wildcard
                # pattern (the argument holds the path patterns' braces).
                job=lambda wildcards, text=job_argument(job.cells, job.seeds): text,
            shell:
                COMMANDS.train_packed
