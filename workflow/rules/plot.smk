# Figures from the analysis tables, in two jobs that can run side by side:
# the loss curves (one figure per (problem, loss) and the overview) and the
# comparison figures. Each job draws all its figures in one process
# (optbench.figures), so a grid of any size costs two Python start-ups.


localrules:
    plot_curves,
    plot_analysis,


rule plot_curves:
    input:
        steps=STEP_SUMMARY,
        selection=SELECTION,
    output:
        [
            report(
                LOSS_FIGURE.format(problem=problem, loss=loss, ext=ext),
                caption="../report/loss_figure.rst",
                category=RUNS,
                subcategory="Loss curves",
                labels={"problem": problem, "loss": loss, "format": ext},
            )
            for problem, loss in PROBLEM_LOSSES
            for ext in FIGURE_FORMATS
        ],
        [
            report(
                OVERVIEW_FIGURE.format(ext=ext),
                caption="../report/overview_figure.rst",
                category=RUNS,
                subcategory="Loss curves",
                labels={"problem": "all", "loss": "all", "format": ext},
            )
            for ext in FIGURE_FORMATS
        ],
    log:
        "results/logs/plot/curves.log",
    conda:
        ANALYSIS_ENV
    params:
        band=EXPERIMENT.band,
        panels=PROBLEM_LOSSES,
        formats=FIGURE_FORMATS,
        n_seeds=len(EXPERIMENT.seeds),
        code=PLOT_CODE,
    script:
        "../scripts/plot.py"


# The tables the comparison figures are drawn from.
FIGURE_TABLES = (
    "runs",
    "selection",
    "leaderboard",
    "sensitivity",
    "best_of_k",
    "profiles",
    "profile_scores",
    "win_matrix",
)
# name -> (report category, caption file)
_FIGURE_REPORT = {
    "finals": (PER_PROBLEM, "finals_figure"),
    "ranks": (PER_PROBLEM, "ranks_figure"),
    "sensitivity": (TUNING, "sensitivity_figure"),
    "ecdf": (PER_PROBLEM, "ecdf_figure"),
    "profiles": (ACROSS, "profiles_figure"),
    "win_matrix": (ACROSS, "win_matrix_figure"),
    "best_of_k": (TUNING, "best_of_k_figure"),
}


rule plot_analysis:
    input:
        **{name: f"{SUMMARY_DIR}/{TABLE_FILES[name]}" for name in FIGURE_TABLES},
    output:
        **{
            name: report(
                ANALYSIS_FIGURE.format(name=stem),
                caption=f"../report/{_FIGURE_REPORT[name][1]}.rst",
                category=_FIGURE_REPORT[name][0],
                labels={"figure": f"{stem}.png"},
            )
            for name, stem in ANALYSIS_FIGURES.items()
        },
    log:
        "results/logs/plot/analysis.log",
    conda:
        ANALYSIS_ENV
    params:
        n_seeds=len(EXPERIMENT.seeds),
        n_tuning_seeds=len(EXPERIMENT.tuning_seeds),
        n_blocks=len(PROBLEM_LOSSES),
        # The last step of each (problem, loss): where the ECDF's curves end.
        horizons={
            f"{problem}/{loss}": EXPERIMENT.problems[problem].steps - 1
            for problem, loss in PROBLEM_LOSSES
        },
        context=ANALYSIS_CONTEXT,
        code=PLOT_CODE,
    script:
        "../scripts/plot.py"
