# Training jobs. A job runs as a plain command rather than through script:, so
# it imports torch and the standard library only (Snakemake's script preamble
# would import Snakemake itself into every job).
#
# Seed packing (config seeds_per_job = K). K = 1 is the one generic rule
# `train`, one job per run. For K > 1 a job must declare the outputs of all
# its seeds, and Snakemake rules cannot derive a variable output list from a
# wildcard, so one rule is generated per block of seed values (0..K-1,
# K..2K-1, ...) that the config uses; each rule keeps the {problem}, {loss},
# {optimizer} and {variant} wildcards, so the rule graph has one node per
# block, not per run. Tuning and evaluation seeds are packed alike.
# Blocks follow seed values, not positions, so adding a seed re-runs only the
# block it falls in. The command lines are in common.smk.


if EXPERIMENT.seeds_per_job == 1:

    rule train:
        output:
            tsv=RUN_TSV,
            sidecar=RUN_SIDECAR,
        log:
            "results/logs/train/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.log",
        benchmark:
            "results/benchmarks/train/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv"
        conda:
            TRAIN_ENV
        threads: 1
        resources:
            gpu=TRAINING_GPUS,
        params:
            spec=cell_spec,
        shell:
            TRAIN_ONE_SEED

else:

    for block in SEED_BLOCKS:

        rule:
            name:
                f"train_seeds_{block.label}"
            output:
                tsv=expand(RUN_TSV, seed=block.seeds, allow_missing=True),
                sidecar=expand(RUN_SIDECAR, seed=block.seeds, allow_missing=True),
            log:
                f"results/logs/train/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}/seeds{block.label}.log",
            benchmark:
                f"results/benchmarks/train/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}/seeds{block.label}.tsv"
            conda:
                TRAIN_ENV
            threads: 1
            resources:
                gpu=TRAINING_GPUS,
            params:
                spec=cell_spec,
                # A default argument binds this block's seeds now; a plain
                # reference to `block` would see the loop's last value.
                runs=lambda wildcards, output, seeds=block.seeds: run_arguments(seeds, output),
            shell:
                TRAIN_PACKED
