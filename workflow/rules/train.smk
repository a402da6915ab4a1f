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
# every path (common.smk job_argument). The command lines are in common.smk.
#
# Outputs per job, not per run: a packed job's only output is its manifest
# (<study folder>/manifests/train/...), written last, listing every run's TSV
# and sidecar with what the TSV held. So the DAG holds one file per job however
# many runs it has (Snakemake's planning cost grows with the files it tracks:
# 41 s and 1.25 GB to dry-run 100,000 runs when it tracked two per run); the
# runs' TSVs and sidecars are written beside it as before. The summary jobs
# take the manifests as input. A run file deleted or changed by hand is found
# against its manifest in every invocation (optbench.planning.status, common.smk),
# and its job runs again, training that run and reusing the others. A job
# killed half-way keeps its finished runs: they are no outputs, so Snakemake
# removes none of them, and the run index (optbench.reuse) hands them to the
# next start. Only the generic one-run rule `train` still lists its run files.
# With config run_files: per_job (optbench.run_layout) a job writes one run file
# beside its manifest instead of a TSV and sidecar per run (optbench.jobfiles;
# the command gains --run-files per_job); the manifest and rules are the same.
#
# The manifest (and the one-run rule's files) are update() outputs: Snakemake
# leaves the previous version in place while the job re-runs (train.py reads
# it for the runs it may reuse) and puts it back if the job fails.
#
# Priorities: Snakemake starts the ready jobs of the highest priority first;
# a job's is its estimated training milliseconds (optbench.planning.cost), so the
# longest jobs start first instead of after every small one.


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
        priority: cell_job_priority
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
                manifest=update(cell_job_file("manifests", f"seeds{seed_range.label}", ".tsv")),
            log:
                cell_job_file("logs", f"seeds{seed_range.label}", ".log"),
            benchmark:
                cell_job_file("benchmarks", f"seeds{seed_range.label}", ".tsv")
            priority: range_job_priority(len(seed_range.seeds))
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
                manifest=update(job.log("manifests", ".tsv")),
            log:
                job.log(),
            benchmark:
                job.log("benchmarks", ".tsv")
            priority: job_priority(job.cells, len(job.seeds))
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
