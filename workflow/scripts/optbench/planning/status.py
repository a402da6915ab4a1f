"""What each training job already holds and what it will train, said in words.

Torch-free and read in every invocation (common.smk), so its cost is one read
per manifest and, where manifests exist, one ``stat`` per planned run file; a
fresh study (no manifest) costs nothing per run.

A training job's Snakemake output is its manifest alone (runfiles.write_manifest):
the DAG holds O(1) files per job, not two per run. So the per-run checks are
made here, against the manifests the jobs wrote:

- a run a manifest lists whose TSV or sidecar is gone, or whose TSV's size and
  modification time moved and whose SHA-256 differs (runfiles.unchanged_since),
  makes its job run again: its manifest is set aside (recovery.set_aside) and
  asked for; the job reuses every other run (optbench.reuse) and trains that one;
- a run no manifest lists, or whose cell's planned settings differ from the
  ones its manifest recorded (jobs.cell_digest), is trained by its job, which
  Snakemake runs because its parameters changed.

``describe`` turns this into the plan a person reads before anything runs: one
line per job that will run (at most ``SHOWN_JOBS``, the rest counted on one
line), each under ``MAX_LINE`` characters, with its reasons in words, then the
totals: runs, run-steps, how many will train and how many are reused.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from optbench import reuse, runfiles
from optbench.planning import jobs as jobs_module

MAX_LINE = 300
# Job lines printed at most; a grid of thousands of jobs gets one more line
# counting the rest, so that its dry run stays a page, not a file.
SHOWN_JOBS = 50

# A planned run's state against the manifests.
NEW = "new"  # no manifest lists it
CHANGED = "changed"  # its cell's settings differ from those it was trained with
MISSING = "missing"  # listed, but its TSV or sidecar is gone
EDITED = "edited"  # listed, but its TSV no longer holds what was recorded
KEPT = "kept"  # listed and intact: reused


@dataclass(frozen=True)
class PlannedJob:
    """One training job as planned: a readable name, its manifest, cells and seeds."""

    label: str  # e.g. "linear/mse seeds 0-9"
    manifest: str
    cells: tuple  # settings.Cell
    seeds: tuple[int, ...]

    @property
    def runs(self) -> int:
        return len(self.cells) * len(self.seeds)


def planned_jobs(experiment, root: str) -> list[PlannedJob]:
    """Every training job of ``experiment`` (any job_scope and seeds_per_job), with the
    manifest path its rule writes under ``root`` (the study's folder)."""
    if experiment.job_scope != "cell":
        return [
            PlannedJob(
                f"{'/'.join(job.key)} seeds {job.label}",
                job.log("manifests", ".tsv"),
                job.cells,
                job.seeds,
            )
            for job in experiment.training_jobs(root)
        ]
    if experiment.seeds_per_job == 1:
        ranges = [(f"seed{seed}", str(seed), (seed,)) for seed in experiment.all_seeds]
    else:
        ranges = [(f"seeds{r.label}", r.label, tuple(r.seeds)) for r in experiment.seed_ranges()]
    return [
        PlannedJob(
            f"{'/'.join(vars(cell).values())} seeds {label}",
            jobs_module.cell_job_file(root, "manifests", stem, ".tsv").format(**vars(cell)),
            (cell,),
            seeds,
        )
        for cell in experiment.cells()
        for stem, label, seeds in ranges
    ]


@dataclass
class JobStatus:
    job: PlannedJob
    counts: Counter = field(default_factory=Counter)  # state -> runs
    # (cell, Counter of its runs' states, its seeds no manifest lists) per cell
    cells: list = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    dropped: int = 0  # runs its own manifest lists that are no longer planned
    set_aside: bool = False  # its manifest lists a run missing or edited by hand

    @property
    def runs_again(self) -> bool:
        """Whether Snakemake will run the job (its manifest missing or set aside, or
        its runs or their settings changed)."""
        return (
            self.set_aside
            or not Path(self.job.manifest).exists()
            or self.dropped > 0
            or self.to_train > 0
        )

    @property
    def to_train(self) -> int:
        return sum(count for state, count in self.counts.items() if state != KEPT)


def known_runs(manifests) -> dict[str, tuple[runfiles.ManifestEntry, int]]:
    """TSV path -> (its manifest entry, the manifest's mtime in ns), over ``manifests``
    and their set-aside ``.previous`` copies; the newest manifest wins."""
    found = []
    for manifest in manifests:
        for path in (manifest, f"{manifest}{reuse.PREVIOUS}"):
            try:
                found.append((os.stat(path).st_mtime_ns, path))
            except OSError:
                continue
    known = {}
    for written, path in sorted(found):
        try:
            entries = runfiles.read_manifest_entries(path)
        except (OSError, runfiles.RunFileError):
            continue  # not a manifest of ours: nothing recorded to compare
        for entry in entries:
            known[entry.tsv] = (entry, written)
    return known


def study_manifests(root: str) -> list[str]:
    """Every manifest under <root>/manifests/train, of this and earlier grids (a
    grown seed range has a new name; its old manifest still vouches for its runs)."""
    folder = Path(root, "manifests", "train")
    found = []
    for directory, _, files in os.walk(folder):
        found += [os.path.join(directory, name) for name in files if name.endswith(".tsv")]
    return found


def run_state(entry, written: int, cell_digest: str, sidecar: str, job_rows=None) -> str:
    """One planned run's state, given what its newest manifest recorded (``entry``,
    written at ``written`` ns) and its cell's planned digest. ``job_rows``: a
    JobRows that reads each per-job run file once (run_files per_job)."""
    if entry.cell_sha256 is not None and entry.cell_sha256 != cell_digest:
        return CHANGED
    if entry.per_job:
        return (job_rows or JobRows()).state(entry, written)
    if not os.path.exists(entry.tsv) or not os.path.exists(sidecar):
        return MISSING
    if not runfiles.unchanged_since(entry, manifest_mtime_ns=written):
        return EDITED
    return KEPT


class JobRows:
    """The per-job run files' states (run_files per_job, optbench.jobfiles): a file
    whose size and modification time are as its manifest recorded (or no later
    than the manifest) is unchanged, at the cost of one stat; else each row's
    digest is computed once (the file read once) and compared with the manifest's:
    a row that differs, or is gone, is a run changed by hand."""

    def __init__(self):
        self.stamps: dict[str, tuple[int, int] | None] = {}
        self.digests: dict[str, dict[str, str]] = {}

    def state(self, entry, written: int) -> str:
        path = entry.sidecar
        if path not in self.stamps:
            try:
                found = os.stat(path)
                self.stamps[path] = (found.st_size, found.st_mtime_ns)
            except OSError:
                self.stamps[path] = None
        stamp = self.stamps[path]
        if stamp is None:
            return MISSING
        size, mtime = stamp
        if size == entry.tsv_bytes and (mtime == entry.tsv_mtime_ns or mtime <= written):
            return KEPT
        if path not in self.digests:
            self.digests[path] = runfiles.job_rows(path)
        return KEPT if self.digests[path].get(entry.tsv) == entry.tsv_sha256 else EDITED


def check(planned, cell_digests, run_patterns, known) -> list[JobStatus]:
    """The state of every planned run, job by job. ``cell_digests``: cell -> its
    jobs.cell_digest, for every cell of the grid; ``run_patterns``: the TSV and
    sidecar path patterns; ``known``: known_runs' mapping (empty for a fresh
    study: no run is looked at)."""
    # Variants per optimizer in the grid: all of them added or changed is said
    # as the optimizer's change, whatever the job's scope.
    variants_of = Counter(
        optimizer for optimizer, _ in {(c.optimizer, c.variant) for c in cell_digests}
    )
    tsv_pattern, sidecar_pattern = run_patterns
    job_rows = JobRows()
    statuses = []
    for job in planned:
        status = JobStatus(job)
        planned_tsvs = set()
        for cell in job.cells:
            fields = vars(cell)
            states = Counter()
            if not known:
                states[NEW] = len(job.seeds)
                status.cells.append((cell, states, list(job.seeds)))
                status.counts.update(states)
                continue
            new_seeds = []
            for seed in job.seeds:
                tsv = tsv_pattern.format(seed=seed, **fields)
                planned_tsvs.add(tsv)
                found = known.get(tsv)
                if found is None:
                    states[NEW] += 1
                    new_seeds.append(seed)
                    continue
                sidecar = sidecar_pattern.format(seed=seed, **fields)
                states[run_state(*found, cell_digests[cell], sidecar, job_rows)] += 1
            status.cells.append((cell, states, new_seeds))
            status.counts.update(states)
        if known:
            own = _own_entries(job.manifest)
            status.dropped = sum(1 for tsv in own if tsv not in planned_tsvs)
            status.set_aside = Path(job.manifest).exists() and bool(
                status.counts[MISSING] or status.counts[EDITED]
            )
        status.reasons = _reasons(status, variants_of)
        statuses.append(status)
    return statuses


def _own_entries(manifest: str) -> list[str]:
    for path in (manifest, f"{manifest}{reuse.PREVIOUS}"):
        try:
            return [entry.tsv for entry in runfiles.read_manifest_entries(path)]
        except (OSError, runfiles.RunFileError):
            continue
    return []


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _grouped(cells, verb: str, variants_of: Counter) -> list[str]:
    """Cells added or changed, in words: "optimizer adamw added" where that is every
    variant of the optimizer the job holds, else "variant lr=0.2 of sgd added"."""
    by_optimizer: dict[str, list[str]] = {}
    for cell in cells:
        by_optimizer.setdefault(cell.optimizer, []).append(cell.variant)
    said = []
    for optimizer, variants in by_optimizer.items():
        variants = list(dict.fromkeys(variants))
        if len(variants) == variants_of[optimizer]:
            said.append(f"optimizer {optimizer} {verb}")
        elif len(variants) == 1:
            said.append(f"variant {variants[0]} of {optimizer} {verb}")
        else:
            said.append(f"{len(variants)} variants of {optimizer} {verb}")
    return said


def _reasons(status: JobStatus, variants_of: Counter) -> list[str]:
    if status.counts[NEW] == status.job.runs:
        # None of its runs is listed by this study's manifests.
        return ["not trained yet"]
    new_cells = [cell for cell, states, _ in status.cells if states[NEW] == sum(states.values())]
    reasons = _grouped(new_cells, "added", variants_of)
    seeds = {
        seed
        for _, states, new_seeds in status.cells
        if states[NEW] < sum(states.values())
        for seed in new_seeds
    }
    if seeds:
        reasons.append(f"{_plural(len(seeds), 'seed')} added")
    changed = [cell for cell, states, _ in status.cells if states[CHANGED]]
    reasons += _grouped(changed, "changed", variants_of)
    if status.counts[MISSING]:
        reasons.append(f"{_plural(status.counts[MISSING], 'run')} with a file missing")
    if status.counts[EDITED]:
        reasons.append(f"{_plural(status.counts[EDITED], 'run')} changed by hand")
    if status.dropped:
        reasons.append(f"{_plural(status.dropped, 'run')} no longer planned")
    if not reasons and not Path(status.job.manifest).exists():
        reasons.append("every run reused from an earlier job's files")
    return reasons


def job_line(status: JobStatus) -> str:
    """One job, at most MAX_LINE characters: its name, runs, what it trains, why."""
    kept = status.counts[KEPT]
    head = (
        f"  {status.job.label}: {_plural(status.job.runs, 'run')}, {status.to_train:,} to train, "
        f"{kept:,} reused"
    )
    line = f"{head} ({'; '.join(status.reasons)})" if status.reasons else head
    if len(line) > MAX_LINE:
        line = line[: MAX_LINE - 2] + "…)"
    return line


@dataclass(frozen=True)
class Totals:
    runs: int
    run_steps: int
    jobs: int
    jobs_to_run: int
    to_train: int
    train_steps: int
    reused: int


def totals(statuses, steps_of) -> Totals:
    """``steps_of``: problem name -> its steps."""
    runs = run_steps = to_run = to_train = train_steps = 0
    for status in statuses:
        job = status.job
        cell_steps = sum(steps_of[cell.problem] for cell in job.cells)
        runs += job.runs
        run_steps += cell_steps * len(job.seeds)
        if status.runs_again:
            to_run += 1
            to_train += status.to_train
            for cell, states, _ in status.cells:
                trained = sum(c for s, c in states.items() if s != KEPT)
                train_steps += steps_of[cell.problem] * trained
    return Totals(runs, run_steps, len(statuses), to_run, to_train, train_steps, runs - to_train)


def describe(statuses, steps_of, plan=None, limit=None) -> list[str]:
    """The plan's lines: one per job that will run (SHOWN_JOBS at most), then the
    totals; ``plan`` (cost.Plan) adds the memory and time estimates."""
    running = [status for status in statuses if status.runs_again]
    lines = ["training jobs to run, each with its runs, what it trains and why:"]
    lines += [job_line(status) for status in running[:SHOWN_JOBS]]
    hidden = running[SHOWN_JOBS:]
    if hidden:
        reasons = Counter(reason for status in hidden for reason in status.reasons)
        common = ", ".join(f"{reason} ({count:,})" for reason, count in reasons.most_common(3))
        lines.append(
            f"  ... and {_plural(len(hidden), 'more job')}, "
            f"{_plural(sum(s.to_train for s in hidden), 'run')} to train ({common})"[:MAX_LINE]
        )
    if not running:
        lines = ["training jobs to run: none (every run is reused)"]
    found = totals(statuses, steps_of)
    lines.append(
        f"totals: {_plural(found.runs, 'run')} ({found.run_steps:,} run-steps) in "
        f"{_plural(found.jobs, 'training job')}; {_plural(found.jobs_to_run, 'job')} to run, "
        f"{_plural(found.to_train, 'run')} ({found.train_steps:,} run-steps) to train, "
        f"{found.reused:,} reused"
    )
    if plan is not None:
        lines.append(plan.describe(limit, share=found.train_steps / max(found.run_steps, 1)))
    return lines
