# Across-seed statistics in two steps: a summary per grid cell and seed role,
# reading only that cell's runs (adding a seed re-summarises only the cells it
# touches),
# then one small step combining the cells into the step summary and the
# leaderboard. Both are cheap, so they run on the submitting host.


localrules:
    summarize_cell,
    summarize,


rule summarize_cell:
    input:
        cell_runs,
    output:
        CELL_SUMMARY,
    log:
        "results/logs/summarize/{role}/{problem}/{loss}/{optimizer}/{variant}.log",
    conda:
        ANALYSIS_ENV
    params:
        steps=cell_steps,
        code=CELL_SUMMARY_CODE,
    shell:
        SUMMARIZE_CELL


rule summarize:
    input:
        cells=cell_summaries("evaluation"),
        tuning=cell_summaries("tuning"),
    output:
        steps=report(
            STEP_SUMMARY,
            caption="../report/step_summary.rst",
            category="Summaries",
        ),
        leaderboard=report(
            LEADERBOARD,
            caption="../report/leaderboard.rst",
            category="Summaries",
        ),
        selection=report(
            SELECTION,
            caption="../report/selection.rst",
            category="Summaries",
        ),
    log:
        "results/logs/summarize.log",
    conda:
        ANALYSIS_ENV
    params:
        code=COMBINE_CODE,
    script:
        "../scripts/summarize.py"
