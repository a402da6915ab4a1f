# Configuration check, grid and paths shared by all rules. Runs in every
# snakemake invocation, so it stays torch-free and does no per-job work.
import hashlib
import logging
import os
import re
import shlex
import sys
from pathlib import Path

SCRIPTS = Path(workflow.current_basedir).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from optbench.planning import cost, jobs, settings  # noqa: E402
from optbench import grid  # noqa: E402
from optbench.reporting import outputs  # noqa: E402
from optbench.reporting.analysis_context import context_for, threshold_text  # noqa: E402


def refuse(message):
    """Stop before any job with the message alone: a WorkflowError would add the
    rule file's name and line, which tell a user nothing about their config."""
    print(message, file=sys.stderr)
    sys.exit(1)


class _NothingToRestore(logging.Filter):
    """Training outputs are flagged update() (train.smk): Snakemake keeps the
    previous runs while their job re-runs and puts them back if it fails. A
    run made for the first time had no previous version; Snakemake's line
    saying so, once per file of a failed job, would drown the reason."""

    def filter(self, record):
        return not str(record.msg).endswith(": no backup found.")


logging.getLogger("snakemake.logging").addFilter(_NothingToRestore())

# Users add problems as files here (docs/problems.md); looked up by name only.
PROBLEMS_DIR = Path(workflow.basedir) / "problems"

# Snakemake fixes the executor only after the rules are parsed, so a cluster
# profile says so itself: it sets local-cores, an option Snakemake uses only
# when jobs go to a cluster (profiles/slurm*). A job running there parses the
# rules again, in remote mode.
CLUSTER_RUN = workflow.resource_settings.local_cores is not None or workflow.remote_exec

try:
    EXPERIMENT = settings.validate(
        config,
        Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml",
        problems_dir=PROBLEMS_DIR,
        # --config values arrive as text; a config file's types are kept as written.
        command_line=dict(workflow.config_settings.config),
        # Jobs sent to a cluster run on its nodes, whose memory is not known here.
        memory_bytes=None if CLUSTER_RUN else "machine",
    )
except settings.ConfigError as error:
    _count = len(error.problems)
    refuse(f"Invalid configuration ({_count} problem{'s' if _count > 1 else ''}):\n{error}")

RUN_TSV = "results/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv"
RUN_SIDECAR = "results/runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.json"
# One summary per cell and seed role: evaluation seeds report the comparison,
# tuning seeds pick each optimizer's variant.
CELL_SUMMARY = "results/summary/cells/{role}/{problem}/{loss}/{optimizer}/{variant}.json"
STEP_SUMMARY = "results/summary/steps.tsv"
LEADERBOARD = "results/summary/leaderboard.tsv"
SELECTION = "results/summary/selection.tsv"
SUMMARY_DIR = "results/summary"
LOSS_FIGURE = "results/figures/losses/{problem}/{loss}.{ext}"
OVERVIEW_FIGURE = "results/figures/overview.{ext}"
ANALYSIS_FIGURE = "results/figures/{name}.png"
FIGURE_FORMATS = ("png", "svg")
# The tables of the analysis and the comparison figures, each declared once
# (optbench.reporting.outputs, standard library only: parsing the rules imports no pandas).
TABLE_FILES = outputs.TABLE_FILES
ANALYSIS_FIGURES = outputs.ANALYSIS_FIGURES
ROLES = {"evaluation": EXPERIMENT.seeds, "tuning": EXPERIMENT.tuning_seeds}

# A cell is a grid point without the seed: the wildcards of RUN_TSV but seed.
CELL_FIELDS = grid.CELL_FIELDS
CELLS = EXPERIMENT.cells()
RUN_SPECS = {
    (cell.problem, cell.loss, cell.optimizer, cell.variant): EXPERIMENT.run_spec_json(cell)
    for cell in CELLS
}
# The (problem, loss) pairs of the grid, in configured order: one figure each.
PROBLEM_LOSSES = list(dict.fromkeys((cell.problem, cell.loss) for cell in CELLS))
SEED_RANGES = EXPERIMENT.seed_ranges()
# Per (problem, loss): the steps-to-threshold level, as the cell job takes it.
THRESHOLDS = {
    f"{problem}/{loss}": threshold_text(EXPERIMENT.thresholds, problem, loss)
    for problem, loss in PROBLEM_LOSSES
}
# What the analysis job needs from the config, one JSON-able param.
ANALYSIS_CONTEXT = jobs.DigestedMapping(context_for(EXPERIMENT, THRESHOLDS).as_dict())
# Jobs of a job_scope coarser than one cell; each gets its own rule (train.smk).
TRAINING_JOBS = EXPERIMENT.training_jobs() if EXPERIMENT.job_scope != "cell" else []


# Packed layouts: one summary job per seed role and training-job key, whose
# inputs are those training jobs' manifests (jobs.plan_summaries).
SUMMARY_JOBS = jobs.plan_summaries(TRAINING_JOBS, ROLES)


def summary_job_argument(job):
    cells_settings = [
        (
            vars(cell),
            EXPERIMENT.problems[cell.problem].steps,
            THRESHOLDS[f"{cell.problem}/{cell.loss}"],
        )
        for cell in job.cells
    ]
    return jobs.DigestedText(
        jobs.summary_argument(cells_settings, ROLES[job.role], RUN_TSV, CELL_SUMMARY, job.role)
    )


def cell_spec(wildcards):
    return RUN_SPECS[wildcards.problem, wildcards.loss, wildcards.optimizer, wildcards.variant]


def cell_steps(wildcards):
    return EXPERIMENT.problems[wildcards.problem].steps


def cell_threshold(wildcards):
    return THRESHOLDS[f"{wildcards.problem}/{wildcards.loss}"]


def job_argument(cells, seeds):
    """A packed job's --job JSON: its cells once, its seeds as ranges, the path patterns
    (never every path: a job's command line must stay under Linux's 128 KiB)."""
    # Recorded by its digest: a dry run's reasons then stay short (jobs.DigestedText).
    return jobs.DigestedText(jobs.argument(EXPERIMENT, cells, seeds, RUN_TSV, RUN_SIDECAR))


def range_job_argument(wildcards, seeds):
    """The --job JSON of one cell's range of seeds (job_scope cell)."""
    cell = settings.Cell(*(getattr(wildcards, field) for field in CELL_FIELDS))
    return job_argument([cell], seeds)


def _alternatives(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    problem=_alternatives(EXPERIMENT.problems),
    loss=_alternatives({cell.loss for cell in CELLS}),
    optimizer=_alternatives(EXPERIMENT.optimizers),
    variant=_alternatives({cell.variant for cell in CELLS}),
    role=_alternatives(ROLES),
    seed=r"\d+",
    ext=_alternatives(FIGURE_FORMATS),


def cell_runs(wildcards):
    """A cell's runs of one seed role (one call per cell, not per run)."""
    fields = {field: getattr(wildcards, field) for field in CELL_FIELDS}
    return expand(RUN_TSV, seed=ROLES[wildcards.role], **fields)


def cell_sidecars(wildcards):
    """The sidecars of those runs (held-out loss/accuracy): read once, with the TSVs."""
    fields = {field: getattr(wildcards, field) for field in CELL_FIELDS}
    return expand(RUN_SIDECAR, seed=ROLES[wildcards.role], **fields)


def cell_summaries(role):
    # In config order, which the step summary's rows follow.
    if not ROLES[role]:
        return []
    return [
        CELL_SUMMARY.format(role=role, **{field: getattr(cell, field) for field in CELL_FIELDS})
        for cell in CELLS
    ]


def lost_cell_summaries():
    """Cell summaries missing while the tables made from them exist.

    Snakemake remakes a missing file only for a job that has to run, and a
    missing input does not make the tables out of date. A cell summary goes
    missing when its job fails or is interrupted (its output is removed), often
    after its runs changed; asked for as a target, it is made again, and the
    tables after it. A new cell (runs not all there yet) is left to the rules.
    """
    if not Path(STEP_SUMMARY).exists():
        return []
    lost = []
    for role, seeds in ROLES.items():
        for cell in CELLS:
            fields = {field: getattr(cell, field) for field in CELL_FIELDS}
            summary = CELL_SUMMARY.format(role=role, **fields)
            if seeds and not Path(summary).exists():
                runs = expand(RUN_TSV, seed=seeds, **fields)
                if all(Path(run).exists() for run in runs):
                    lost.append(summary)
    return lost


def code_digest(*names):
    # Snakemake re-runs a job when its command or script file changes, not when
    # the library code it calls does; given as a param, a digest of that code
    # makes the summaries follow it (a dry run says "Params have changed").
    digest = hashlib.sha256()
    for name in names:
        digest.update((SCRIPTS / name).read_bytes())
    return digest.hexdigest()[:12]


CELL_SUMMARY_CODE = code_digest(
    "summarize_cell.py",
    "optbench/reporting/cells.py",
    "optbench/runfiles.py",
    "optbench/reporting/logscale.py",
    "optbench/reporting/runmetrics.py",
    "optbench/reporting/resolution.py",
)
COMBINE_CODE = code_digest(
    "optbench/reporting/summary.py",
    "optbench/reporting/cells.py",
    "optbench/reporting/analysis.py",
    "optbench/reporting/statistics.py",
    "optbench/reporting/selection.py",
    "optbench/reporting/comparison.py",
    "optbench/reporting/perfprofiles.py",
    "optbench/reporting/claims.py",
)
PLOT_CODE = code_digest("optbench/reporting/figures.py")


def loss_figures():
    return [
        LOSS_FIGURE.format(problem=problem, loss=loss, ext=ext)
        for problem, loss in PROBLEM_LOSSES
        for ext in FIGURE_FORMATS
    ]


def overview_figures():
    return [OVERVIEW_FIGURE.format(ext=ext) for ext in FIGURE_FORMATS]


def analysis_figures():
    return [ANALYSIS_FIGURE.format(name=stem) for stem in ANALYSIS_FIGURES.values()]


def table_paths():
    return {name: f"{SUMMARY_DIR}/{file}" for name, file in TABLE_FILES.items()}


def report_table(table):
    """A table of the analysis (an optbench.reporting.outputs.Table), wrapped for the report
    with its caption and category."""
    return report(
        f"{SUMMARY_DIR}/{table.file}",
        caption=f"../report/{table.caption}.rst",
        category=table.category,
        labels={"table": table.file},
    )


def final_outputs():
    # Every figure: Snakemake re-makes a missing file only when it is asked
    # for. The tables are inputs of the figures, so they are made without
    # being listed here (which keeps a dry run's lines shorter).
    figures = overview_figures() + loss_figures() + analysis_figures()
    return [LEADERBOARD] + figures + lost_cell_summaries() + lost_runs()


def lost_runs():
    """Run files missing while the manifest of their packed training job exists.

    The summary jobs of packed layouts take the manifests as input, not the runs,
    so nothing would ask for a deleted run file again; asked for as a target, it
    makes its training job run again, and the summaries after it."""
    lost = []
    for training_job in TRAINING_JOBS:
        if Path(training_job.log("manifests", ".tsv")).exists():
            for cell in training_job.cells:
                for seed in training_job.seeds:
                    fields = vars(cell)
                    for pattern in (RUN_TSV, RUN_SIDECAR):
                        path = pattern.format(seed=seed, **fields)
                        if not os.path.exists(path):
                            lost.append(path)
    return lost


def _python():
    # Like Snakemake's own script: directive: the interpreter running Snakemake,
    # unless a conda env is deployed, whose python then comes first on PATH.
    from snakemake.settings.types import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    return sys.executable


PYTHON = _python()

# Training command lines. Constants, so Snakemake formats them at run time
# with nothing late-bound; one seed per job needs no Python call per job.
_TRAIN = (
    f"{shlex.quote(PYTHON)} {shlex.quote(str(SCRIPTS / 'train.py'))}"
    f" --problems-dir {shlex.quote(str(PROBLEMS_DIR))}"
    f" --engine {EXPERIMENT.engine} --numerics {EXPERIMENT.numerics} --threads {{threads}}"
)
# The log takes everything; a failed job also shows its log's last lines in the
# console (why it failed), not only the log's path (braces doubled for format).
_TO_LOG = (
    " > {log:q} 2>&1 || {{ status=$?; echo 'training job failed; the end of {log}:' >&2;"
    " tail -n 5 {log:q} >&2; exit $status; }}"
)
TRAIN_ONE_SEED = (
    f"{_TRAIN} --spec {{params.spec:q}} --run {{wildcards.seed}} {{output.tsv:q}}"
    f" {{output.sidecar:q}}{_TO_LOG}"
)
TRAIN_PACKED = f"{_TRAIN} --job {{params.job:q}}{_TO_LOG}"
TRAIN_PACKED_WITH_MANIFEST = (
    f"{_TRAIN} --job {{params.job:q}} --manifest {{output.manifest:q}}{_TO_LOG}"
)

# Per-cell summary: a plain command too, so that a job imports numpy and
# scipy.special only. The cell's identity is passed to be checked against
# every run's path, parsed with the run-path pattern (braces doubled: the
# command is formatted once more per job).
_RUN_PATTERN_ARGUMENT = shlex.quote(RUN_TSV).replace("{", "{{").replace("}", "}}")
SUMMARIZE_CELL = (
    f"{shlex.quote(PYTHON)} {shlex.quote(str(SCRIPTS / 'summarize_cell.py'))}"
    f" --pattern {_RUN_PATTERN_ARGUMENT} --steps {{params.steps}} "
    + " ".join(f"--cell {field}={{wildcards.{field}:q}}" for field in CELL_FIELDS)
    + " --threshold {params.threshold:q} --out {output:q} {input.runs:q} > {log:q} 2>&1"
)
# Several cells at once (packed layouts): cells, seeds and path patterns as JSON.
SUMMARIZE_GROUP = (
    f"{shlex.quote(PYTHON)} {shlex.quote(str(SCRIPTS / 'summarize_cell.py'))}"
    " --group {params.group:q} > {log:q} 2>&1"
)

# Conda environments (used under --use-conda), relative to this directory like
# every conda: path of the rule files beside it. Training takes the CUDA or the
# CPU build of torch as config torch_build says (auto: cpu when device is cpu).
TRAIN_ENVS = {
    "cuda": "../../envs/train-cuda.yaml",
    "cpu": "../../envs/train-cpu.yaml",
}
TRAIN_ENV = TRAIN_ENVS[EXPERIMENT.torch_build]
ANALYSIS_ENV = "../../envs/analysis.yaml"


# GPUs per training job, as Snakemake resource `gpu`: the executor plugin's
# own name, so on SLURM it becomes `sbatch --gpus=N`, and locally
# profiles/default caps the sum over running jobs (resources: gpu=1). Decided
# from config without importing torch: cpu asks for none, cuda/cuda:N for one,
# and auto for one where a GPU can be had: on a cluster, or locally when an
# NVIDIA GPU is visible (so a CPU-only machine never serialises jobs).
# Force it with --set-resources train:gpu=1 (or 0).
def _local_gpu_visible():
    from optbench.planning.gpus import local_gpu_visible

    return local_gpu_visible()


# Decided with CLUSTER_RUN (top of this file); either way a dry run shows the
# real request.
LOCAL_GPU_VISIBLE = EXPERIMENT.device == "auto" and not CLUSTER_RUN and _local_gpu_visible()

# A CUDA device asked for where jobs run here and no GPU is visible: refused
# before any job runs (and before Snakemake removes any output to re-make it).
# On a cluster the GPU is on the compute node, so nothing is known here.
if EXPERIMENT.device.startswith("cuda") and not CLUSTER_RUN and not _local_gpu_visible():
    refuse(
        f"Invalid configuration (1 problem):\nconfig key device: {EXPERIMENT.device} asks for "
        "a CUDA GPU, but none is visible on this machine (no NVIDIA device, or "
        "CUDA_VISIBLE_DEVICES hides it), and the jobs run here. Fix: use device auto "
        "(CUDA where there is one, else the CPU) or cpu, or submit to a cluster with a GPU "
        "(--profile profiles/slurm)."
    )


def _auto_device_gpus(wildcards):
    # A cluster profile without local-cores: decided once the executor runs.
    return 1 if workflow.non_local_exec or workflow.remote_exec else 0


# A plain number where the config decides (no per-job call on large grids).
if EXPERIMENT.device == "cpu":
    TRAINING_GPUS = 0
elif EXPERIMENT.device != "auto" or CLUSTER_RUN or LOCAL_GPU_VISIBLE:
    TRAINING_GPUS = 1
else:
    TRAINING_GPUS = _auto_device_gpus


# The planned work, stated before any job (a grid whose largest job cannot fit
# in this machine's memory was refused by settings.validate above).
if not workflow.remote_exec:
    print(
        cost.plan_for(EXPERIMENT).describe(None if CLUSTER_RUN else cost.machine_bytes()),
        file=sys.stderr,
    )
