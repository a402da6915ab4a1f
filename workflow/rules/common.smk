# Configuration check, grid and paths shared by all rules. Runs in every
# snakemake invocation, so it stays torch-free and does no per-job work.
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

SCRIPTS = Path(workflow.current_basedir).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from optbench import settings  # noqa: E402

try:
    EXPERIMENT = settings.validate(
        config, Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"
    )
except settings.ConfigError as error:
    raise WorkflowError(f"Invalid configuration:\n{error}") from None

RUN_TSV = "results/runs/{loss}/{optimizer}/seed{seed}.tsv"
RUN_SIDECAR = "results/runs/{loss}/{optimizer}/seed{seed}.json"
STEP_SUMMARY = "results/summary/steps.tsv"
LEADERBOARD = "results/summary/leaderboard.tsv"
LOSS_FIGURE = "results/figures/losses/{loss}.{ext}"
OVERVIEW_FIGURE = "results/figures/overview.{ext}"
FIGURE_FORMATS = ("png", "svg")

# Grid in a fixed order (losses, optimizers, seeds as configured): the summary
# rule's inputs and its params.grid line up index by index.
GRID = [
    (loss, optimizer, seed)
    for loss in EXPERIMENT.losses
    for optimizer in EXPERIMENT.optimizers
    for seed in EXPERIMENT.seeds
]
RUN_SPECS = {
    (loss, optimizer): EXPERIMENT.run_spec_json(loss, optimizer)
    for loss in EXPERIMENT.losses
    for optimizer in EXPERIMENT.optimizers
}
SEED_BLOCKS = EXPERIMENT.seed_blocks()


def cell_spec(wildcards):
    return RUN_SPECS[wildcards.loss, wildcards.optimizer]


def run_arguments(seeds, output):
    """The training command's shell-quoted --run SEED TSV SIDECAR arguments."""
    return " ".join(
        f"--run {int(seed)} {shlex.quote(tsv)} {shlex.quote(sidecar)}"
        for seed, tsv, sidecar in zip(seeds, output.tsv, output.sidecar, strict=True)
    )


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    loss=_alternatives(EXPERIMENT.losses),
    optimizer=_alternatives(EXPERIMENT.optimizers),
    seed=r"\d+",
    ext=_alternatives(FIGURE_FORMATS),


def run_tsvs():
    return [RUN_TSV.format(loss=l, optimizer=o, seed=s) for l, o, s in GRID]


def final_outputs():
    figures = [OVERVIEW_FIGURE.format(ext=ext) for ext in FIGURE_FORMATS]
    figures += [
        LOSS_FIGURE.format(loss=loss, ext=ext)
        for loss in EXPERIMENT.losses
        for ext in FIGURE_FORMATS
    ]
    return [STEP_SUMMARY, LEADERBOARD] + figures


def _python():
    # Like Snakemake's own script: directive: the interpreter running Snakemake,
    # unless a conda env is deployed, whose python then comes first on PATH.
    from snakemake.settings.types import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    return sys.executable


PYTHON = _python()
