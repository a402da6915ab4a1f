# Across-seed statistics: one table per step and a final-step leaderboard.
# Cheap and reading every run file, so it runs on the submitting host.


localrules:
    summarize,


rule summarize:
    input:
        runs=run_tsvs(),
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
    log:
        "results/logs/summarize.log",
    conda:
        ANALYSIS_ENV
    params:
        grid=GRID,
        steps=EXPERIMENT.steps,
    script:
        "../scripts/summarize.py"
