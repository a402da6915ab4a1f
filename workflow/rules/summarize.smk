# Analysis in two steps: a summary per grid cell and seed role, reading only
# that cell's runs (TSVs and sidecars, once: per-step statistics and per-run
# metrics; adding a seed re-summarises only the cells it touches), then ONE
# job computing every table from the cell summaries (optbench.analysis).
# Both are light, so they run on the submitting host.


localrules:
    summarize_cell,
    summarize,


rule summarize_cell:
    input:
        runs=cell_runs,
        sidecars=cell_sidecars,
    output:
        CELL_SUMMARY,
    log:
        "results/logs/summarize/{role}/{problem}/{loss}/{optimizer}/{variant}.log",
    conda:
        ANALYSIS_ENV
    params:
        steps=cell_steps,
        threshold=cell_threshold,
        code=CELL_SUMMARY_CODE,
    shell:
        SUMMARIZE_CELL


rule summarize:
    input:
        cells=cell_summaries("evaluation"),
        tuning=cell_summaries("tuning"),
    output:
        runs=report_table("runs", "runs", RUNS),
        steps=report_table("steps", "step_summary", RUNS),
        selection=report_table("selection", "selection", TUNING),
        sensitivity=report_table("sensitivity", "sensitivity", TUNING),
        candidates=report_table("candidates", "candidates", TUNING),
        tuning_gain=report_table("tuning_gain", "tuning_gain", TUNING),
        best_of_k=report_table("best_of_k", "best_of_k", TUNING),
        pairwise=report_table("pairwise", "pairwise", PER_PROBLEM),
        leaderboard=report_table("leaderboard", "leaderboard", PER_PROBLEM),
        ratios=report_table("ratios", "ratios", ACROSS),
        profiles=report_table("profiles", "profiles", ACROSS),
        profile_scores=report_table("profile_scores", "profile_scores", ACROSS),
        friedman=report_table("friedman", "friedman", ACROSS),
        win_probabilities=report_table("win_probabilities", "win_probabilities", ACROSS),
        win_matrix=report_table("win_matrix", "win_matrix", ACROSS),
        claims=report_table("claims", "claims", CLAIMS),
    log:
        "results/logs/summarize.log",
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
