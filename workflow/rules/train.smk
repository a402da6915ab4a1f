# Training jobs. A job runs as a plain command rather than through script:, so
# it imports torch and the standard library only (Snakemake's script preamble
# would import Snakemake itself into every job).
#
# Seed packing (config seeds_per_job = K). K = 1 is the one generic rule
# `train`, one job per run. For K > 1 a job must declare the outputs of all
# its seeds, and Snakemake rules cannot derive a variable output list from a
# wildcard, so one rule is generated per block of seed values (0..K-1,
# K..2K-1, ...) that the config uses; each rule keeps the {loss} and
# {optimizer} wildcards, so the rule graph has one node per block, not per run.
# Blocks follow seed values, not positions, so adding a seed re-runs only the
# block it falls in.


def train_command(seeds):
    """The job's command line. Interpreter, script and the --run arguments are
    fixed when the rule is defined, so building the DAG of a large grid does no
    per-job Python work beyond Snakemake's own formatting."""
    if seeds is None:  # one job per run: the seed is a wildcard
        runs = "--run {wildcards.seed} {output.tsv:q} {output.sidecar:q}"
    else:
        runs = " ".join(
            f"--run {seed} {{output.tsv[{i}]:q}} {{output.sidecar[{i}]:q}}"
            for i, seed in enumerate(seeds)
        )
    script = shlex.quote(str(SCRIPTS / "train.py"))
    return (
        f"{shlex.quote(PYTHON)} {script} --spec {{params.spec:q}} --threads {{threads}}"
        f" {runs} > {{log:q}} 2>&1"
    )


if EXPERIMENT.seeds_per_job == 1:

    rule train:
        output:
            tsv=RUN_TSV,
            sidecar=RUN_SIDECAR,
        log:
            "results/logs/train/{loss}/{optimizer}/seed{seed}.log",
        benchmark:
            "results/benchmarks/train/{loss}/{optimizer}/seed{seed}.tsv"
        conda:
            TRAIN_ENV
        threads: 1
        resources:
            gpu=training_gpus,
        params:
            spec=cell_spec,
        shell:
            train_command(None)

else:

    for block in SEED_BLOCKS:

        rule:
            name:
                f"train_seeds_{block.label}"
            output:
                tsv=expand(RUN_TSV, seed=block.seeds, allow_missing=True),
                sidecar=expand(RUN_SIDECAR, seed=block.seeds, allow_missing=True),
            log:
                f"results/logs/train/{{loss}}/{{optimizer}}/seeds{block.label}.log",
            benchmark:
                f"results/benchmarks/train/{{loss}}/{{optimizer}}/seeds{block.label}.tsv"
            conda:
                TRAIN_ENV
            threads: 1
            resources:
                gpu=training_gpus,
            params:
                spec=cell_spec,
            shell:
                train_command(block.seeds)
