"""Rules plot_curves and plot_analysis: every figure, drawn in one process per rule."""

from optbench import joblog
from optbench.reporting import figures, summary

# Errors and warnings go to the rule's log (a failure's reason to the console too).
with joblog.logged_job(snakemake.log[0], "plot"):
    if snakemake.rule == "plot_curves":
        # Outputs: each (problem, loss)'s figure in every format, then the overview's.
        formats = list(snakemake.params.formats)
        paths = list(snakemake.output)
        outputs = {}
        for index, panel in enumerate(snakemake.params.panels):
            outputs[tuple(panel)] = paths[index * len(formats) : (index + 1) * len(formats)]
        outputs["overview"] = paths[len(outputs) * len(formats) :]
        figures.draw_curves(
            summary.read_tsv(snakemake.input.steps),
            summary.read_tsv(snakemake.input.selection),
            snakemake.params.band,
            outputs,
        )
    else:
        tables = {name: summary.read_tsv(path) for name, path in snakemake.input.items()}
        horizons = {
            tuple(key.split("/", 1)): float(value)
            for key, value in snakemake.params.horizons.items()
        }
        outputs = {
            name: [snakemake.output[f"{name}_{ext}"] for ext in snakemake.params.formats]
            for name in figures.ANALYSIS_FIGURES
        }
        figures.draw_analysis(tables, outputs, horizons)
