# Analysis in two steps: a summary per grid cell and seed role, reading only
# that cell's runs (TSVs and sidecars, once: per-step statistics and per-run
# metrics), made by one job per cell (job_scope cell: adding a seed
# re-summarises only the cells it touches; its inputs are the runs with one
# seed a job, else the manifests of the cell's jobs) or by one job per training job's
# group of cells (coarser scopes: few jobs on large grids); then ONE job
# computing every table from the cell summaries (optbench.reporting.analysis).
# Both are light, so they run on the submitting host.


localrules:
    summarize,


if EXPERIMENT.job_scope == "cell" and EXPERIMENT.seeds_per_job == 1:

    rule summarize_cell:
        input:
            runs=cell_runs,
            sidecars=cell_sidecars,
        output:
            CELL_SUMMARY,
        log:
            f"{RESULTS}/logs/summarize/{{role}}/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}.log",
        localrule: True
        conda:
            ANALYSIS_ENV
        params:
            steps=cell_steps,
            threshold=cell_threshold,
            heldout_target=cell_heldout_target,
            code=CELL_SUMMARY_CODE,
        shell:
            COMMANDS.summarize_cell

elif EXPERIMENT.job_scope == "cell":

    # Packed ranges of one cell's seeds: the training jobs' only outputs are
    # their manifests (train.smk), so a cell's summary takes the manifests of
    # the ranges holding its role's seeds and reads the runs by their pattern.
    rule summarize_cell:
        input:
            cell_manifests,
        output:
            CELL_SUMMARY,
        log:
            f"{RESULTS}/logs/summarize/{{role}}/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}.log",
        localrule: True
        conda:
            ANALYSIS_ENV
        params:
            group=cell_summary_argument,
            code=CELL_SUMMARY_CODE,
        shell:
            COMMANDS.summarize_group

else:

    # Packed layouts: one summary job per seed role and training job's group
    # of cells (e.g. per (problem, loss)), named like summarize_evaluation_linear_mse.
    # Its input is the manifests of the training jobs of those cells: a deleted
    # or changed run re-runs its training job (a job with a missing output
    # runs again), whose new manifest then re-runs the summaries.
    for summary_job in SUMMARY_JOBS:

        rule:
            name:
                summary_job.name
            input:
                summary_job.manifests,
            output:
                [
                    CELL_SUMMARY.format(role=summary_job.role, **vars(cell))
                    for cell in summary_job.cells
                ],
            log:
                summary_job.log,
            localrule: True
            conda:
                ANALYSIS_ENV
            params:
                # A function: a plain string would be formatted as a wildcard
                # pattern (the argument holds the path patterns' braces).
                group=lambda wildcards, text=summary_job_argument(summary_job): text,
                code=CELL_SUMMARY_CODE,
            shell:
                COMMANDS.summarize_group


rule summarize:
    input:
        cells=cell_summaries("evaluation"),
        tuning=cell_summaries("tuning"),
    output:
        **{table.name: report_table(table) for table in outputs.TABLES},
        **{f"page_{table.name}": report_page(table) for table in outputs.TABLES},
        answer=report_answer(),
        answer_text=f"{SUMMARY_DIR}/{outputs.ANSWER_TEXT}",
    log:
        f"{RESULTS}/logs/summarize.log",
    conda:
        ANALYSIS_ENV
    params:
        context=ANALYSIS_CONTEXT,
        n_seeds=len(EXPERIMENT.seeds),
        n_tuning_seeds=len(EXPERIMENT.tuning_seeds),
        n_blocks=len(PROBLEM_LOSSES),
        n_optimizers=len(EXPERIMENT.optimizers),
        code=COMBINE_CODE,
    script:
        "../scripts/summarize.py"


# The study's runs as Parquet tables (optbench.reporting.columnar): per-step
# curves in long form with each run's settings as columns, the per-run table
# and the held-out curves, for pandas, polars or DuckDB (docs/outputs.md).
# After summarize: runs.tsv is proof that every run of the grid is made. The
# runs are named by params (the cells and seeds), not inputs: listing every
# run file as an input would cost Snakemake's planning time on large grids.
rule columnar:
    input:
        runs=f"{SUMMARY_DIR}/runs.tsv",
    output:
        columnar_tables(),
    log:
        f"{RESULTS}/logs/columnar.log",
    localrule: True
    conda:
        ANALYSIS_ENV
    params:
        # By its digest in Snakemake's records: a dry run's reasons stay short.
        # run_files per_job: the training jobs' manifests too, whose run files it reads.
        grid=jobs.DigestedMapping(
            {"cells": [vars(cell) for cell in CELLS], "seeds": ROLES} | JOB_RUN_FILES
        ),
        # Functions: a plain string would be formatted as a wildcard pattern.
        tsv_pattern=lambda wildcards: RUN_TSV,
        sidecar_pattern=lambda wildcards: RUN_SIDECAR,
        code=commands.code_digest(SCRIPTS, "write_columnar.py"),
    script:
        "../scripts/write_columnar.py"
