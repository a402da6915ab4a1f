# Comparison figures from the step summary, like the article's figure but as
# means over seeds with a band. Light work, kept on the submitting host.


localrules:
    plot_loss,
    plot_overview,


rule plot_loss:
    input:
        steps=STEP_SUMMARY,
        selection=SELECTION,
    output:
        report(
            expand(LOSS_FIGURE, ext=FIGURE_FORMATS, allow_missing=True),
            caption="../report/loss_figure.rst",
            category="Figures",
            labels={"problem": "{problem}", "loss": "{loss}", "figure": "per loss"},
        ),
    log:
        "results/logs/plot/{problem}/{loss}.log",
    conda:
        ANALYSIS_ENV
    params:
        band=EXPERIMENT.band,
    script:
        "../scripts/plot.py"


rule plot_overview:
    input:
        steps=STEP_SUMMARY,
        selection=SELECTION,
    output:
        report(
            expand(OVERVIEW_FIGURE, ext=FIGURE_FORMATS),
            caption="../report/overview_figure.rst",
            category="Figures",
            labels={"problem": "all", "loss": "all", "figure": "overview"},
        ),
    log:
        "results/logs/plot/overview.log",
    conda:
        ANALYSIS_ENV
    params:
        band=EXPERIMENT.band,
        panels=PROBLEM_LOSSES,
    script:
        "../scripts/plot.py"
