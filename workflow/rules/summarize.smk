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


def _table(name, caption, category, subcategory=None):
    return report(
        f"{SUMMARY_DIR}/{TABLE_FILES[name]}",
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory=subcategory,
        labels={"table": TABLE_FILES[name]},
    )


# Report categories, in reading order.
RUNS, TUNING, PER_PROBLEM, ACROSS, CLAIMS = (
    "1 Runs and steps",
    "2 Tuning",
    "3 Per problem",
    "4 Across problems",
    "5 Claims check",
)


rule summarize:
    input:
        cells=cell_summaries("evaluation"),
        tuning=cell_summaries("tuning"),
    output:
        runs=_table("runs", "runs", RUNS),
        steps=_table("steps", "step_summary", RUNS),
        selection=_table("selection", "selection", TUNING),
        sensitivity=_table("sensitivity", "sensitivity", TUNING),
        candidates=_table("candidates", "candidates", TUNING),
        tuning_gain=_table("tuning_gain", "tuning_gain", TUNING),
        best_of_k=_table("best_of_k", "best_of_k", TUNING),
        pairwise=_table("pairwise", "pairwise", PER_PROBLEM),
        leaderboard=_table("leaderboard", "leaderboard", PER_PROBLEM),
        ratios=_table("ratios", "ratios", ACROSS),
        profiles=_table("profiles", "profiles", ACROSS),
        profile_scores=_table("profile_scores", "profile_scores", ACROSS),
        friedman=_table("friedman", "friedman", ACROSS),
        win_probabilities=_table("win_probabilities", "win_probabilities", ACROSS),
        win_matrix=_table("win_matrix", "win_matrix", ACROSS),
        claims=_table("claims", "claims", CLAIMS),
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
