"""The experiment, as the checked configuration describes it: its problems,
losses, optimizers and their variants, its seeds, and the cells and training jobs
they make. Built by ``settings.validate``; torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from optbench import grid
from optbench.planning import jobs
from optbench.planning.run_settings import JOB_WIDE, RunSettings
from optbench.problems import Facts

# The loss name of a problem that is minimised directly (KIND objective): it
# stands in the loss position of paths and tables, so no configured loss may
# take it.
OBJECTIVE = "objective"


# The grid's axes, in the order cells are listed; `only:` selects along them.
GRID_AXES = ("problems", "losses", "optimizers", "seeds")


@dataclass(frozen=True)
class Component:
    """One loss of the grid: its name in paths and how to build it."""

    name: str
    cls: str
    kwargs: dict

    def as_dict(self) -> dict:
        return {"name": self.name, "class": self.cls, "kwargs": self.kwargs}


@dataclass(frozen=True)
class Optimizer:
    """One optimizer entry: its class, base kwargs and the variants its sweep makes."""

    name: str
    cls: str
    kwargs: dict
    sweep: dict
    variants: dict[str, grid.Variant]
    groups: dict | None = None  # parameter role -> its kwargs (training.ROLES)
    # SHA-256 of a user's optimizer file (None otherwise): part of the runs'
    # settings, so editing the file re-runs its runs, like a changed kwarg.
    source_sha256: str | None = None
    # A wrapper's base optimizer class (base:), as class: is written, and the
    # SHA-256 of its file where it is a user's; only where set, so that the
    # settings of entries without one stay as they were.
    base: str | None = None
    base_source_sha256: str | None = None

    def as_dict(self, variant: str) -> dict:
        chosen = self.variants[variant]
        described = {"name": self.name, "class": self.cls, "kwargs": chosen.kwargs}
        if chosen.schedule:
            described["schedule"] = chosen.schedule
        if self.groups:
            described["groups"] = self.groups
        if self.source_sha256 is not None:
            described["source_sha256"] = self.source_sha256
        if self.base is not None:
            described["base"] = self.base
        if self.base_source_sha256 is not None:
            described["base_source_sha256"] = self.base_source_sha256
        return described


@dataclass(frozen=True)
class Problem:
    """One problem entry: a registered problem with its parameters, losses and steps."""

    name: str
    problem: str  # the registered problem (file stem) it instantiates
    kind: str
    kwargs: dict  # every parameter, defaults filled in
    losses: tuple[str, ...]  # configured loss names, or (OBJECTIVE,) for an objective
    steps: int
    # SHA-256 of a user problem file (None for a built-in): part of the runs'
    # settings, so editing the file re-runs its runs, like a changed kwarg.
    source_sha256: str | None = None
    # What its file declares for the estimates and the held-out target
    # (optbench.problems.Facts); not a run setting, so not in as_dict.
    facts: Facts = field(default_factory=Facts, compare=False)
    # The size and budget axes (settings.expand_entry): the config entry this
    # problem comes from where that entry has sizes: or budgets: (None: no
    # axis), its size's name and the declared parameter count (PARAMETER_COUNT)
    # at its parameters.
    family: str | None = None
    size: str | None = None
    parameter_count: int | None = None
    # Whether selection tunes here (tune_at:; False: the setting is transferred
    # from the nearest tuned size and budget). Not a run setting.
    tuned: bool = field(default=True, compare=False)
    # Its parameter count over the default's, at least 1: the dry run prices a
    # larger size's run-steps at RUN_STEP_US (measured at the defaults) times it.
    step_cost_factor: float = field(default=1.0, compare=False)

    def as_dict(self) -> dict:
        described = {
            "name": self.name,
            "problem": self.problem,
            "kind": self.kind,
            "kwargs": self.kwargs,
        }
        if self.source_sha256 is not None:
            described["source_sha256"] = self.source_sha256
        # Only on the size axis, so that other runs keep their settings; the
        # sidecar records them (engines/job.py writes the run settings).
        if self.size is not None:
            described["size"] = self.size
            described["parameter_count"] = self.parameter_count
        return described


@dataclass(frozen=True)
class Cell:
    """One cell (grid.CELL_FIELDS, in that order): every seed of it is one run."""

    problem: str
    loss: str
    optimizer: str
    variant: str


@dataclass(frozen=True)
class Experiment:
    seeds: tuple[int, ...]  # evaluation seeds: the comparison is reported on these
    tuning_seeds: tuple[int, ...]  # used only to pick each optimizer's variant
    device: str
    band: str
    thresholds: dict  # "default" or "problem/loss" -> {relative: x} or {absolute: x}
    seeds_per_job: int  # already resolved: "all" becomes the number of seeds' span
    torch_build: str  # resolved: cuda or cpu
    problems: dict[str, Problem]
    optimizers: dict[str, Optimizer]
    losses: dict[str, Component]
    engine: str = "auto"  # auto, batched or loop (batch_policy.choose_engine)
    job_scope: str = "cell"  # cell, optimizer, loss or problem (jobs.SCOPES)
    numerics: str = "portable"  # portable or native (numerics.py)
    eval_every: int = 0  # held-out metrics every k steps (0: after the last step only)
    # A training job's checkpoint interval (engines/checkpoints.py): steps, seconds (0: off).
    checkpoint_every: tuple[int, float] = (0, 120.0)
    heldout_targets: dict = field(default_factory=dict)  # "problem/loss" -> level
    baseline: str | None = None  # the optimizer every other is compared with
    ranking_metric: str = "auto"  # what selection and ranking judge by (ranking_metric.py)
    run_files: str = "per_run"  # per_run or per_job (optbench.run_layout)
    # The formats every figure is written in (outputs.FIGURE_FORMATS order; png always).
    figure_formats: tuple[str, ...] = ("png", "svg", "pdf")

    @property
    def all_seeds(self) -> tuple[int, ...]:
        """Every seed a run uses: tuning and evaluation seeds, in increasing order."""
        return tuple(sorted(set(self.seeds) | set(self.tuning_seeds)))

    def cells(self) -> list[Cell]:
        """Every (problem, loss, optimizer, variant) in configured order."""
        return [
            Cell(problem.name, loss, optimizer.name, variant)
            for problem in self.problems.values()
            for loss in problem.losses
            for optimizer in self.optimizers.values()
            for variant in optimizer.variants
        ]

    @property
    def n_runs(self) -> int:
        return len(self.cells()) * len(self.all_seeds)

    def seed_ranges(self) -> list[grid.SeedRange]:
        """Every seed grouped by value into ranges of seeds_per_job."""
        return grid.seed_ranges(self.all_seeds, self.seeds_per_job)

    def training_jobs(self, root: str = "results") -> list[jobs.Job]:
        """Every training job: cells grouped by job_scope, times the seed ranges;
        their files under ``root``, the study's folder."""
        return jobs.plan(self.cells(), self.seed_ranges(), self.job_scope, root)

    def job_files(self, root: str, kind: str, suffix: str) -> list[str]:
        """The log, benchmark or manifest (``kind``) of every training job of every
        layout, as the rules name them, under ``root`` (the study's folder)."""
        if self.job_scope != "cell":
            return [job.log(kind, suffix) for job in self.training_jobs(root)]
        if self.seeds_per_job == 1:
            labels = [f"seed{seed}" for seed in self.seeds + self.tuning_seeds]
        else:
            labels = [f"seeds{seed_range.label}" for seed_range in self.seed_ranges()]
        return [
            jobs.cell_job_file(root, kind, label, suffix).format(**vars(cell))
            for cell in self.cells()
            for label in labels
        ]

    def run_settings(self, cell: Cell) -> RunSettings:
        """The settings a training job needs for one cell."""
        problem = self.problems[cell.problem]
        return RunSettings(
            problem=problem.as_dict(),
            steps=problem.steps,
            loss=None if cell.loss == OBJECTIVE else self.losses[cell.loss].as_dict(),
            optimizer=self.optimizers[cell.optimizer].as_dict(cell.variant),
            variant=cell.variant,
            # device, eval_every, ...: the Experiment's fields of the same names.
            **{key: getattr(self, key) for key in JOB_WIDE},
        )

    def run_spec(self, cell: Cell) -> dict:
        """``run_settings`` as a plain dict (its JSON form: a ``--spec`` argument)."""
        return self.run_settings(cell).as_dict()

    def run_spec_json(self, cell: Cell) -> str:
        return json.dumps(self.run_spec(cell), sort_keys=True)
