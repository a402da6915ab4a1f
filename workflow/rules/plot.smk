# Figures from the analysis tables, in two jobs that can run side by side:
# the loss curves (one figure per (problem, loss) and the overview) and the
# comparison figures. Each job draws all its figures in one process
# (optbench.reporting.figures), so a grid of any size costs two Python start-ups.


localrules:
    plot_curves,
    plot_analysis,
    explorer,


rule plot_curves:
    input:
        steps=STEP_SUMMARY,
        selection=SELECTION,
    output:
        [
            report_figure(
                LOSS_FIGURE.format(problem=problem, loss=loss, ext=ext),
                ext,
                caption="../report/loss_figure.rst",
                category=outputs.RUNS,
                subcategory="Loss curves",
                # One label: Snakemake's report takes a second label with two
                # values, each on half the entries, for an on/off toggle, and
                # with one (problem, loss) and the overview its list went blank.
                labels={"figure": f"{problem} / {loss}"},
            )
            for problem, loss in PROBLEM_LOSSES
            for ext in FIGURE_FORMATS
        ],
        [
            report_figure(
                OVERVIEW_FIGURE.format(ext=ext),
                ext,
                caption="../report/overview_figure.rst",
                category=outputs.RUNS,
                subcategory="Loss curves",
                labels={"figure": "overview (every problem and loss)"},
            )
            for ext in FIGURE_FORMATS
        ],
    log:
        f"{RESULTS}/logs/plot/curves.log",
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


rule plot_analysis:
    input:
        **{name: f"{SUMMARY_DIR}/{TABLE_FILES[name]}" for name in outputs.FIGURE_TABLES},
    output:
        **{
            f"{figure.name}_{ext}": report_figure(
                ANALYSIS_FIGURE.format(name=figure.stem, ext=ext),
                ext,
                caption=f"../report/{figure.caption}.rst",
                category=figure.category,
                labels={"figure": f"{figure.stem}.{ext}"},
            )
            for figure in outputs.FIGURES
            for ext in FIGURE_FORMATS
        },
    log:
        f"{RESULTS}/logs/plot/analysis.log",
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
        formats=FIGURE_FORMATS,
        code=PLOT_CODE,
    script:
        "../scripts/plot.py"


# The interactive explorer (optbench.reporting.explorer): one offline HTML page
# from the cell summaries of both seed roles and a few tables.
rule explorer:
    input:
        **{name: f"{SUMMARY_DIR}/{TABLE_FILES[name]}" for name in outputs.EXPLORER_TABLES},
        evaluation=cell_summaries("evaluation"),
        tuning=cell_summaries("tuning"),
    output:
        report(
            EXPLORER,
            caption=f"../report/{outputs.EXPLORER_CAPTION}.rst",
            category=outputs.ANSWER,
            labels={"page": "explorer"},
        ),
    log:
        f"{RESULTS}/logs/plot/explorer.log",
    conda:
        ANALYSIS_ENV
    params:
        band=EXPERIMENT.band,
        title=STUDY,
        code=EXPLORER_CODE,
    script:
        "../scripts/explore.py"
