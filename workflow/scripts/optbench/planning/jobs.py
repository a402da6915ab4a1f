"""Training jobs: which runs each job holds, and the compact argument that describes them.

Torch-free and cheap: Snakemake plans jobs with it in every invocation, and
the training job (engines/job.py) expands the same argument back into runs.

A job holds the runs of a set of cells (config ``job_scope``) for one range of
seed values (config ``seeds_per_job``). Its command line must stay short
whatever the job's size: Linux refuses a single argument over 128 KiB
(MAX_ARG_STRLEN), and Snakemake runs a ``shell:`` command as one ``bash -c``
argument, so listing a 10,000-run job's 20,000 paths would not run. The job
argument therefore names the cells once (their variants' kwargs once per
variant), the seeds as ranges, and the path patterns; ``expand`` turns it back
into (spec, seed, TSV, sidecar) per run, the same paths the rule declares
(tests/test_jobs.py checks both sides agree).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from optbench import grid
from optbench.planning.run_settings import JOB_WIDE, RunSettings

# A job's key: the leading fields of grid.CELL_FIELDS that
# all its runs share. cell: one variant of one optimizer; optimizer: all its
# variants; loss: every optimizer of one (problem, loss); problem: all of it.
SCOPES = {"cell": 4, "optimizer": 3, "loss": 2, "problem": 1}

# Longest job argument allowed: well below MAX_ARG_STRLEN (131,072 bytes) to
# leave room for the rest of the command line (paths of the script and log).
MAX_ARGUMENT = 100_000


class _Digested:
    """A job parameter recorded by its digest: Snakemake stores a param by its repr
    and, when it changes, prints the old and the new repr in a dry run's reason
    lines; the value itself (a job's JSON, the analysis context) is used in full."""

    def __repr__(self) -> str:
        text = self if isinstance(self, str) else json.dumps(self, sort_keys=True, default=str)
        return f"<sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}>"


class DigestedText(_Digested, str):
    """Text (a packed job's --job JSON) recorded by its digest."""


class DigestedMapping(_Digested, dict):
    """A mapping (a rule's context) recorded by its digest."""


@dataclass(frozen=True)
class Job:
    """One training job: the cells it trains, for every seed of its seed range."""

    key: tuple[str, ...]  # the shared leading fields of its cells
    label: str  # its seed range's value range, e.g. "0-9"
    cells: tuple  # settings.Cell, in configured order
    seeds: tuple[int, ...]

    @property
    def runs(self) -> int:
        return len(self.cells) * len(self.seeds)

    def rule_name(self) -> str:
        """train_<key joined by _>_seeds_<label>; plan() makes clashing names unique."""
        return self.name or "_".join(("train", *self.key, "seeds", self.label))

    name: str = ""  # set by plan() only where two jobs' default names clash
    root: str = "results"  # its study's folder (planning.studies.results_root)

    def log(self, kind: str = "logs", suffix: str = ".log") -> str:
        """Where its log (or benchmark, manifest) goes:
        <root>/<kind>/train/<key...>/seeds<label><suffix>."""
        return "/".join((self.root, kind, "train", *self.key, f"seeds{self.label}{suffix}"))


def cell_job_file(root: str, kind: str, seeds: str, suffix: str) -> str:
    """A job_scope cell training job's log, benchmark or manifest (``kind``) for
    ``seeds`` (seed<seed>, or seeds<label> for a range), as a pattern of the
    cell's fields: <root>/<kind>/train/<problem>/<loss>/<optimizer>/<variant>/..."""
    return f"{root}/{kind}/train/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}/{seeds}{suffix}"


def plan(cells, seed_ranges, scope: str, root: str = "results") -> list[Job]:
    """The jobs of a grid: ``cells`` grouped by the first SCOPES[scope] fields, one job
    per group and seed range, groups in the order their first cell appears; their
    files under ``root``, the study's folder."""
    width = SCOPES[scope]
    groups: dict[tuple, list] = {}
    for cell in cells:
        groups.setdefault(tuple(getattr(cell, f) for f in grid.CELL_FIELDS[:width]), []).append(
            cell
        )
    planned = [
        Job(key, seeds.label, tuple(members), tuple(seeds.seeds), root=root)
        for key, members in groups.items()
        for seeds in seed_ranges
    ]
    # Names may contain "_", so problem a_b with loss c and problem a with loss
    # b_c would share a rule name: the later job gets a numbered one.
    seen: set[str] = set()
    for index, job in enumerate(planned):
        name = job.rule_name()
        if name in seen:
            name = f"{name}_{index}"
            planned[index] = Job(job.key, job.label, job.cells, job.seeds, name, root)
        seen.add(name)
    return planned


def seed_ranges(seeds) -> str:
    """Seeds as comma-separated ranges: (0, 1, 2, 5) -> "0-2,5"."""
    ordered = sorted(set(int(s) for s in seeds))
    parts, start = [], None
    for position, seed in enumerate(ordered):
        if start is None:
            start = seed
        last = position + 1 == len(ordered) or ordered[position + 1] != seed + 1
        if last:
            parts.append(str(start) if start == seed else f"{start}-{seed}")
            start = None
    return ",".join(parts)


def parse_seed_ranges(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


# What differs between the variants of one optimizer entry.
PER_VARIANT = ("kwargs", "schedule")


def argument(experiment, cells, seeds, tsv_pattern: str, sidecar_pattern: str) -> str:
    """The JSON a training job receives: everything ``expand`` needs, each thing once."""
    problems, losses, optimizers = {}, {}, {}
    listed, shared_by_all = [], {}
    for cell in cells:
        settings = experiment.run_settings(cell)
        # device, eval_every, ... (the study's): left out while at their defaults.
        shared_by_all = {key: value for key, value in settings.items() if key in JOB_WIDE}
        problems[cell.problem] = {"problem": settings.problem, "steps": settings.steps}
        losses[cell.loss] = settings.loss
        # The entry once (name, class, groups, source digest), each variant's
        # kwargs and, where it has one, its schedule.
        described = settings.optimizer
        shared = {key: value for key, value in described.items() if key not in PER_VARIANT}
        entry = optimizers.setdefault(cell.optimizer, shared | {"v": {}})
        entry["v"][cell.variant] = described["kwargs"]
        if "schedule" in described:
            entry.setdefault("s", {})[cell.variant] = described["schedule"]
        listed.append([cell.problem, cell.loss, cell.optimizer, cell.variant])
    return json.dumps(
        {
            **shared_by_all,
            "problems": problems,
            "losses": losses,
            "optimizers": optimizers,
            "cells": listed,
            "seeds": seed_ranges(seeds),
            "tsv": tsv_pattern,
            "sidecar": sidecar_pattern,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


# Spec keys that say where a job runs from, not what it computes (train.py adds them).
LOCATION_KEYS = ("problems_dir", "optimizers_dir")


def cell_digest(spec: dict) -> str:
    """A short digest of a cell's settings as planned (settings.Experiment.run_spec,
    or a Run's spec: the same dict), without torch: recorded per run in the
    manifest, it lets a dry run say which cell changed (planning.status)."""
    settings = {key: value for key, value in spec.items() if key not in LOCATION_KEYS}
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Run:
    spec: RunSettings  # the cell's settings (shared by its runs), as Experiment.run_settings
    seed: int
    tsv: str
    sidecar: str
    # The cell's fields (problem, loss, optimizer, variant): a per-job run file's
    # cell columns (optbench.jobfiles); None for a run given by --spec.
    cell: dict | None = None


def expand(text: str) -> list[Run]:
    """A job argument's runs: cell by cell in the order given, each cell's seeds ascending."""
    job = json.loads(text)
    runs = []
    for problem, loss, optimizer, variant in job["cells"]:
        entry = job["optimizers"][optimizer]
        settings = RunSettings(
            problem=job["problems"][problem]["problem"],
            steps=job["problems"][problem]["steps"],
            loss=job["losses"][loss],
            optimizer={key: value for key, value in entry.items() if key not in ("v", "s")}
            | {"kwargs": entry["v"][variant]}
            | ({"schedule": entry["s"][variant]} if variant in entry.get("s", {}) else {}),
            variant=variant,
            **{key: job[key] for key in JOB_WIDE if key in job},
        )
        fields = {"problem": problem, "loss": loss, "optimizer": optimizer, "variant": variant}
        for seed in parse_seed_ranges(job["seeds"]):
            runs.append(
                Run(
                    settings,
                    seed,
                    job["tsv"].format(seed=seed, **fields),
                    job["sidecar"].format(seed=seed, **fields),
                    fields,
                )
            )
    return runs


# ------------------------------------- summary jobs: several cells at once


@dataclass(frozen=True)
class SummaryJob:
    """One job summarising, for one seed role, the cells that the training jobs of
    one key hold (every seed range together): a packed grid is then a few summary
    jobs, not one per cell (Snakemake spends ~0.25 s on each job it schedules,
    more than a cell's summary costs)."""

    name: str
    role: str
    key: tuple
    cells: tuple
    # The manifests of those training jobs: its inputs (a few files, not the
    # thousands of runs they list; Snakemake's planning and bookkeeping time
    # grows with inputs x outputs per job).
    manifests: tuple
    root: str = "results"  # its study's folder

    @property
    def log(self) -> str:
        return "/".join((self.root, "logs", "summarize", self.role, *self.key)) + ".log"


def plan_summaries(training_jobs, roles: dict) -> list[SummaryJob]:
    """The summary jobs of packed training jobs: per seed role with seeds (``roles``:
    role -> seeds), one per training-job key, in the order the keys first appear."""
    groups: dict[tuple, tuple[dict, list]] = {}
    roots = {job.root for job in training_jobs}
    root = roots.pop() if len(roots) == 1 else "results"
    for job in training_jobs:
        cells, manifests = groups.setdefault(job.key, ({}, []))
        cells.update(dict.fromkeys(job.cells))
        manifests.append(job.log("manifests", ".tsv"))
    planned, seen = [], set()
    for role, seeds in roles.items():
        if not seeds:
            continue
        for key, (cells, manifests) in groups.items():
            name = "_".join(("summarize", role, *key))
            name = name if name not in seen else f"{name}_{len(seen)}"
            seen.add(name)
            planned.append(SummaryJob(name, role, key, tuple(cells), tuple(manifests), root))
    return planned


@dataclass(frozen=True)
class SummaryTask:
    """One cell of a summary job: its runs, what they must hold, where its summary goes."""

    identity: dict[str, str]
    steps: int
    threshold: str  # cells.Threshold's command-line form, e.g. relative:0.001
    runs: list[str]
    out: str
    heldout_target: str = ""  # cells.HeldoutTarget's, e.g. accuracy:0.9 ("" none)


def summary_argument(cells, seeds, run_pattern: str, out_pattern: str, role: str) -> str:
    """The JSON a summary job of several cells receives: each cell once (identity,
    steps, threshold), the seeds once and the path patterns, never every path
    (the same 128 KiB limit as a training job's command).

    ``cells``: (identity dict, steps, threshold text, held-out target text) per cell.
    """
    listed = [
        [identity, int(steps), str(threshold), str(target)]
        for identity, steps, threshold, target in cells
    ]
    return json.dumps(
        {
            "cells": listed,
            "seeds": seed_ranges(seeds),
            "runs": run_pattern,
            "out": out_pattern,
            "role": role,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def expand_summary(text: str) -> tuple[str, list[SummaryTask]]:
    """The run-path pattern and the cells of ``summary_argument``'s JSON, with their paths."""
    group = json.loads(text)
    seeds = parse_seed_ranges(group["seeds"])
    tasks = [
        SummaryTask(
            dict(identity),
            steps,
            threshold,
            [group["runs"].format(seed=seed, **identity) for seed in seeds],
            group["out"].format(role=group["role"], **identity),
            target,
        )
        for identity, steps, threshold, target in group["cells"]
    ]
    return group["runs"], tasks
