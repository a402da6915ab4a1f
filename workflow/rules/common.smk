# Configuration check, grid and paths shared by all rules. Runs in every
# snakemake invocation, so it stays torch-free and does no per-job work.
import gc

# Snakemake's start leaves about a million objects alive for good (its
# modules, its plugins', pandas' and SQLAlchemy's), and each of Python's full
# garbage collections walks every one of them: about 0.08 s of CPU each, a few
# times in every start, in the work below and while the DAG is built. Frozen,
# they are left out of every later collection (gc.freeze, made for long-lived
# state; they stay alive as they would anyway), which takes about 0.3 s off
# each snakemake start, the job-step starts under Slurm included.
gc.freeze()

import logging
import math
import re
import sys
from pathlib import Path

SCRIPTS = Path(workflow.current_basedir).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from optbench.planning import (  # noqa: E402
    commands,
    cost,
    gpus,
    jobs,
    recovery,
    settings,
    status,
    studies,
)
from optbench import grid  # noqa: E402
from optbench.reporting import outputs  # noqa: E402
from optbench.reporting.analysis_context import (  # noqa: E402
    context_for,
    heldout_target_text,
    power_lines,
    threshold_text,
)


def refuse(message):
    """Stop before any job with the message alone: a WorkflowError would add the
    rule file's name and line, which tell a user nothing about their config."""
    print(message, file=sys.stderr)
    sys.exit(1)


class _NothingToRestore(logging.Filter):
    """Training outputs are flagged update() (train.smk): Snakemake keeps the
    previous version (a manifest; a one-run job's run files) while their job
    re-runs and puts it back if it fails. A file made for the first time had
    no previous version; Snakemake's line saying so, once per file of a failed
    job, would drown the reason."""

    def filter(self, record):
        return not str(record.msg).endswith(": no backup found.")


logging.getLogger("snakemake.logging").addFilter(_NothingToRestore())

# Users add problems and optimizers as files here (docs/problems.md, README
# "Your optimizer"); looked up by name only.
PROBLEMS_DIR = Path(workflow.basedir) / "problems"
OPTIMIZERS_DIR = Path(workflow.basedir) / "optimizers"

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
        optimizers_dir=OPTIMIZERS_DIR,
        # --config values arrive as text; a config file's types are kept as written.
        command_line=dict(workflow.config_settings.config),
        # Jobs sent to a cluster run on its nodes, whose memory is not known here.
        memory_bytes=None if CLUSTER_RUN else "machine",
    )
except settings.ConfigError as error:
    _count = len(error.problems)
    refuse(f"Invalid configuration ({_count} problem{'s' if _count > 1 else ''}):\n{error}")

# The study (optbench.planning.studies): config key study, else the config
# file's stem. Everything it writes goes under RESULTS: results/ for the
# default config.yaml (study config), results/<study>/ for any other.
CONFIG_FILES = [str(path) for path in workflow.config_settings.configfiles]
STUDY = studies.study_name(config.get("study"), CONFIG_FILES)
if studies.name_problems(STUDY):
    refuse(f"Invalid configuration (1 problem):\n{studies.name_problems(STUDY)[0]}")
RESULTS = studies.results_root(STUDY)

RUN_TSV = f"{RESULTS}/runs/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}/seed{{seed}}.tsv"
RUN_SIDECAR = f"{RESULTS}/runs/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}/seed{{seed}}.json"
# One summary per cell and seed role: evaluation seeds report the comparison,
# tuning seeds pick each optimizer's variant.
CELL_SUMMARY = (
    f"{RESULTS}/summary/cells/{{role}}/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}.json"
)
STEP_SUMMARY = f"{RESULTS}/summary/steps.tsv"
LEADERBOARD = f"{RESULTS}/summary/leaderboard.tsv"
SELECTION = f"{RESULTS}/summary/selection.tsv"
SUMMARY_DIR = f"{RESULTS}/summary"
LOSS_FIGURE = f"{RESULTS}/figures/losses/{{problem}}/{{loss}}.{{ext}}"
OVERVIEW_FIGURE = f"{RESULTS}/figures/overview.{{ext}}"
ANALYSIS_FIGURE = f"{RESULTS}/figures/{{name}}.{{ext}}"
EXPLORER = f"{SUMMARY_DIR}/{outputs.EXPLORER_PAGE}"
# The runs as Parquet tables (rule columnar, optbench.reporting.columnar).
COLUMNAR_DIR = f"{RESULTS}/{outputs.COLUMNAR_FOLDER}"
# Written last, when the study's tables and figures are made (study.smk).
STUDY_RECORD = f"{RESULTS}/{studies.RECORD}"


def cell_job_file(kind, seeds, suffix):
    """A job_scope cell training job's log, benchmark or manifest (``kind``) for
    ``seeds`` (seed{seed} or seeds<label>), a pattern of the cell's wildcards."""
    return jobs.cell_job_file(RESULTS, kind, seeds, suffix)


# The formats the config asks for (figure_formats; png always), in outputs.FIGURE_FORMATS order.
FIGURE_FORMATS = EXPERIMENT.figure_formats


def report_figure(path, ext, **wrapping):
    """A figure file as an output: wrapped for the report (caption, category,
    labels) where the report carries its format (outputs.in_report: the PNG),
    else a plain file on disk (its SVG and PDF twins)."""
    return report(path, **wrapping) if outputs.in_report(ext) else path


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
# Per (problem, loss): the held-out target, as the cell job takes it ("": none):
# the config's, else the one the problem's file declares.
HELDOUT_TARGETS = {
    f"{problem}/{loss}": heldout_target_text(
        EXPERIMENT.heldout_targets,
        problem,
        EXPERIMENT.problems[problem].facts.heldout_target,
        loss,
    )
    for problem, loss in PROBLEM_LOSSES
}
# What the analysis job needs from the config, one JSON-able param.
ANALYSIS_CONTEXT = jobs.DigestedMapping(context_for(EXPERIMENT, THRESHOLDS).as_dict())
# Jobs of a job_scope coarser than one cell; each gets its own rule (train.smk).
TRAINING_JOBS = EXPERIMENT.training_jobs(RESULTS) if EXPERIMENT.job_scope != "cell" else []


# Packed layouts: one summary job per seed role and training-job key, whose
# inputs are those training jobs' manifests (jobs.plan_summaries).
SUMMARY_JOBS = jobs.plan_summaries(TRAINING_JOBS, ROLES)


def _summary_settings(cell):
    """A cell as a summary job takes it: identity, steps, threshold, held-out target."""
    return (
        vars(cell),
        EXPERIMENT.problems[cell.problem].steps,
        THRESHOLDS[f"{cell.problem}/{cell.loss}"],
        HELDOUT_TARGETS[f"{cell.problem}/{cell.loss}"],
    )


def summary_job_argument(job):
    cells_settings = [_summary_settings(cell) for cell in job.cells]
    return jobs.DigestedText(
        jobs.summary_argument(cells_settings, ROLES[job.role], RUN_TSV, CELL_SUMMARY, job.role)
    )


def _wildcard_cell(wildcards):
    return settings.Cell(*(getattr(wildcards, field) for field in CELL_FIELDS))


def cell_summary_argument(wildcards):
    """The --group JSON of one cell's summary (job_scope cell, packed seed ranges)."""
    cell = _wildcard_cell(wildcards)
    role = wildcards.role
    return jobs.DigestedText(
        jobs.summary_argument([_summary_settings(cell)], ROLES[role], RUN_TSV, CELL_SUMMARY, role)
    )


def cell_manifests(wildcards):
    """The manifests of the seed ranges holding a cell's seeds of one role."""
    seeds = set(ROLES[wildcards.role])
    stems = [f"seeds{r.label}" for r in SEED_RANGES if seeds.intersection(r.seeds)]
    fields = vars(_wildcard_cell(wildcards))
    return [cell_job_file("manifests", stem, ".tsv").format(**fields) for stem in stems]


def cell_spec(wildcards):
    return RUN_SPECS[wildcards.problem, wildcards.loss, wildcards.optimizer, wildcards.variant]


def cell_steps(wildcards):
    return EXPERIMENT.problems[wildcards.problem].steps


def cell_threshold(wildcards):
    return THRESHOLDS[f"{wildcards.problem}/{wildcards.loss}"]


def cell_heldout_target(wildcards):
    return HELDOUT_TARGETS[f"{wildcards.problem}/{wildcards.loss}"]


def job_argument(cells, seeds):
    """A packed job's --job JSON: its cells once, its seeds as ranges, the path patterns
    (never every path: a job's command line must stay under Linux's 128 KiB)."""
    # Recorded by its digest: a dry run's reasons then stay short (jobs.DigestedText).
    return jobs.DigestedText(jobs.argument(EXPERIMENT, cells, seeds, RUN_TSV, RUN_SIDECAR))


def range_job_argument(wildcards, seeds):
    """The --job JSON of one cell's range of seeds (job_scope cell)."""
    return job_argument([_wildcard_cell(wildcards)], seeds)


def job_priority(cells, seeds):
    """A training job's priority: its estimated milliseconds on one core (rounded
    up; whole seconds would tie every short job)."""
    return math.ceil(1000 * cost.job_seconds(EXPERIMENT, cells, seeds))


def cell_job_priority(wildcards, seeds=1):
    """The priority of a job_scope cell job of ``seeds`` seeds, by its wildcards."""
    return job_priority([_wildcard_cell(wildcards)], seeds)


def range_job_priority(seeds):
    """The priority function of the job_scope cell rule of ranges of ``seeds`` seeds."""
    return lambda wildcards: cell_job_priority(wildcards, seeds)


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
    return recovery.lost_cell_summaries(STEP_SUMMARY, CELLS, ROLES, CELL_SUMMARY, RUN_TSV)


# Digests of the code each summary and plot job runs (commands.code_digest).
CELL_SUMMARY_CODE = commands.code_digest(SCRIPTS, "summarize_cell.py")
COMBINE_CODE = commands.code_digest(SCRIPTS, "summarize.py")
PLOT_CODE = commands.code_digest(SCRIPTS, "plot.py")
EXPLORER_CODE = commands.code_digest(SCRIPTS, "explore.py")


def loss_figures():
    return [
        LOSS_FIGURE.format(problem=problem, loss=loss, ext=ext)
        for problem, loss in PROBLEM_LOSSES
        for ext in FIGURE_FORMATS
    ]


def overview_figures():
    return [OVERVIEW_FIGURE.format(ext=ext) for ext in FIGURE_FORMATS]


def analysis_figures():
    return [
        ANALYSIS_FIGURE.format(name=stem, ext=ext)
        for stem in ANALYSIS_FIGURES.values()
        for ext in FIGURE_FORMATS
    ]


def table_paths():
    return {name: f"{SUMMARY_DIR}/{file}" for name, file in TABLE_FILES.items()}


def report_table(table):
    """A table of the analysis (an optbench.reporting.outputs.Table), wrapped for the report
    with its caption and category: the TSV, which the report offers for download
    (not a table too big to download from a report: outputs.Table.downloadable)."""
    if not table.downloadable:
        return f"{SUMMARY_DIR}/{table.file}"
    return report(
        f"{SUMMARY_DIR}/{table.file}",
        caption=f"../report/{table.caption}.rst",
        category=table.category,
        labels={"table": table.file, "format": "tsv (download)"},
    )


def report_page(table):
    """The same table's HTML page (optbench.reporting.tablepages), which the report
    opens as a sortable table, beside its TSV."""
    return report(
        f"{SUMMARY_DIR}/{outputs.page_file(table)}",
        caption=f"../report/{table.caption}.rst",
        category=table.category,
        labels={"table": table.file, "format": "html (read here)"},
    )


def report_answer():
    """The study's answer (optbench.reporting.answer): the report's first category."""
    return report(
        f"{SUMMARY_DIR}/{outputs.ANSWER_PAGE}",
        caption=f"../report/{outputs.ANSWER_CAPTION}.rst",
        category=outputs.ANSWER,
        labels={"page": "answer"},
    )


def study_outputs():
    # Every figure: Snakemake re-makes a missing file only when it is asked
    # for. The tables are inputs of the figures, so they are made without
    # being listed here (which keeps a dry run's lines shorter).
    return (
        [LEADERBOARD, EXPLORER]
        + overview_figures()
        + loss_figures()
        + analysis_figures()
        + columnar_tables()
    )


def columnar_tables():
    return [f"{COLUMNAR_DIR}/{name}" for name in outputs.COLUMNAR_FILES]


def final_outputs():
    # The study's record is made from all its outputs, so it comes last (study.smk).
    return [STUDY_RECORD] + lost_cell_summaries() + SET_ASIDE_MANIFESTS


def _python():
    # Like Snakemake's own script: directive: the interpreter running Snakemake,
    # unless a conda env is deployed, whose python then comes first on PATH.
    from snakemake.settings.types import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return "python"
    return sys.executable


PYTHON = _python()

COMMANDS = commands.commands(
    PYTHON,
    SCRIPTS,
    PROBLEMS_DIR,
    OPTIMIZERS_DIR,
    EXPERIMENT.engine,
    EXPERIMENT.numerics,
    RUN_TSV,
    CELL_FIELDS,
    studies.RUN_INDEX,
    EXPERIMENT.checkpoint_every,
    EXPERIMENT.run_files,
)
TRAIN_ENV = commands.TRAIN_ENVS[EXPERIMENT.torch_build]
ANALYSIS_ENV = commands.ANALYSIS_ENV

# GPUs per training job and the CUDA check (gpus.training_gpus, device_refusal),
# decided with CLUSTER_RUN (top of this file) from the config, without torch;
# a dry run shows the real request. Force it with --set-resources train:gpu=1.
LOCAL_GPU_VISIBLE = EXPERIMENT.device != "cpu" and not CLUSTER_RUN and gpus.local_gpu_visible()
_refusal = gpus.device_refusal(EXPERIMENT.device, CLUSTER_RUN, LOCAL_GPU_VISIBLE)
if _refusal:
    # Before any job runs.
    refuse(f"Invalid configuration (1 problem):\n{_refusal}")


def _auto_device_gpus(wildcards):
    # A cluster profile without local-cores: decided once the executor runs.
    return 1 if workflow.non_local_exec or workflow.remote_exec else 0


TRAINING_GPUS = gpus.training_gpus(EXPERIMENT.device, CLUSTER_RUN, LOCAL_GPU_VISIBLE)
if TRAINING_GPUS == gpus.DECIDED_BY_EXECUTOR:
    TRAINING_GPUS = _auto_device_gpus


# What this study computes (studies.config_digest): recorded with its results
# (study.smk), compared when a report is built.
CONFIG_DIGEST = studies.config_digest(config, RUN_SPECS.values())


def _building_report():
    # Snakemake parses this file before it is told what to do with it, so the
    # command line tells; --report-after-run first runs the workflow, which
    # brings the record up to date.
    words = sys.argv[1:]
    asked = any(word == "--report" or word.startswith("--report=") for word in words)
    return asked and "--report-after-run" not in words


if _building_report():
    _refusal = studies.report_refusal(RESULTS, STUDY, CONFIG_FILES, CONFIG_DIGEST)
    if _refusal:
        refuse(_refusal)


# What each training job holds and will train (optbench.planning.status): a
# packed job's only output is its manifest, so a run file deleted or changed by
# hand since its job wrote it (size and mtime against the manifest, SHA-256
# where those moved) is found here. That job's manifest is set aside (kept as
# <manifest>.previous, which the job reads for the runs it may reuse) and asked
# for (final_outputs): the job runs again, trains that run and reuses the
# others; Snakemake itself would say "Nothing to be done". Then the plan is
# stated before any job, one line per job that runs, with the totals (a grid
# whose largest job cannot fit in this machine's memory was refused by
# settings.validate above). Checked in a dry run too.
PLANNED_JOBS = status.planned_jobs(EXPERIMENT, RESULTS)
# run_files per_job (optbench.run_layout): the manifests whose run files the
# columnar tables read; nothing under per_run (its rule's parameters unchanged).
JOB_RUN_FILES = (
    {"manifests": [job.manifest for job in PLANNED_JOBS]}
    if EXPERIMENT.run_files == "per_job"
    else {}
)
SET_ASIDE_MANIFESTS = []
if not workflow.remote_exec:
    _plan = cost.plan_for(EXPERIMENT)
    _limit = None if CLUSTER_RUN else cost.machine_bytes()
    if _building_report():
        _lines = [_plan.describe(_limit)]
    else:
        _statuses = status.check(
            PLANNED_JOBS,
            {cell: jobs.cell_digest(EXPERIMENT.run_spec(cell)) for cell in CELLS},
            (RUN_TSV, RUN_SIDECAR),
            status.known_runs(status.study_manifests(RESULTS)),
        )
        for _status in _statuses:
            if _status.set_aside:
                recovery.set_aside(_status.job.manifest)
        SET_ASIDE_MANIFESTS = recovery.set_aside_manifests(job.manifest for job in PLANNED_JOBS)
        _steps = {name: problem.steps for name, problem in EXPERIMENT.problems.items()}
        _lines = status.describe(_statuses, _steps, _plan, _limit)
    print(*_lines, *power_lines(EXPERIMENT), sep="\n", file=sys.stderr)
