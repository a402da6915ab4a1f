"""A cell's runs read from per-job run files (config run_files: per_job, optbench.jobfiles).

The summary jobs of the per-job layout get their training jobs' manifests;
each lists its runs by name (the TSV path they would have per run) with the
job's run file. ``read_cell`` gathers one cell's rows from those files into
the same ``cells.CellRuns`` the per-run reader makes from TSVs and sidecars,
so every statistic after it is computed by the same code. A summary job
handles its cells one at a time and holds one run file in memory at a time
(``RunFileCache``): its memory follows the largest job file and cell, not the
number of cells or runs it summarises.
"""

from __future__ import annotations

import json

import numpy as np

from optbench import jobfiles, runfiles
from optbench.reporting import cells


def run_locations(manifests) -> dict[str, str]:
    """Run name -> its job's run file, over the per-job manifests given."""
    found = {}
    for manifest in manifests:
        for entry in runfiles.read_manifest_entries(manifest):
            if not entry.per_job:
                raise cells.CellError(
                    f"{manifest}: a manifest of per-run files, but run_files is per_job. "
                    "Fix: delete the study's manifests folder so that its jobs run again "
                    "(they reuse nothing across layouts), or set run_files: per_run."
                )
            found[entry.tsv] = entry.sidecar
    return found


class RunFileCache:
    """The last run file read, kept while the next cell needs it too."""

    def __init__(self):
        self.path, self.runs, self.rows = None, None, None

    def get(self, path: str) -> tuple[jobfiles.JobRuns, dict[str, int]]:
        if path != self.path:
            self.path, self.runs, self.rows = None, None, None  # free the last one first
            runs = jobfiles.read(path)
            self.path, self.runs = path, runs
            self.rows = {name: row for row, name in enumerate(runs.name_list)}
        return self.runs, self.rows


# The sidecar entries a cell summary reads (cells.read_cell reads the same).
READ_ENTRIES = ("loss", "heldout", "heldout_curve", "step_timing")


def _read_entries(runs: jobfiles.JobRuns, row: int) -> dict:
    """The entries of the run's sidecar the summary reads: from its cell's shared
    entries where they are all there (no per-run JSON parsed: a tenth of a second
    per thousand runs), else from the whole sidecar."""
    common = runs.cell_list[int(runs.cell[row])]["common"]
    if all(name in common for name in READ_ENTRIES):
        return common
    return runs.sidecar(row)


def read_cell(names, locations, identity: dict, steps: int, cache=None) -> cells.CellRuns:
    """The runs named ``names`` (one cell's), from their job files, sorted by seed;
    a run no manifest lists, or whose row is of another cell or length, raises
    cells.CellError naming it and the fix."""
    cache = cache or RunFileCache()
    by_file: dict[str, list[str]] = {}
    for name in names:
        if name not in locations:
            raise cells.CellError(
                f"{name}: no manifest given lists this run. Fix: run the workflow again "
                "(its training job then writes it)."
            )
        by_file.setdefault(locations[name], []).append(name)
    seeds, losses, evaluations, sidecars = [], [], [], []
    for path, wanted in by_file.items():
        runs, rows = cache.get(path)
        for name in wanted:
            row = rows.get(name)
            if row is None:
                raise cells.CellError(
                    f"{path}: run {name} is not in this run file. Fix: run the workflow "
                    "again (the run's job trains it again)."
                )
            fields = runs.cell_list[int(runs.cell[row])]["fields"]
            if any(fields.get(key) != value for key, value in identity.items()):
                raise cells.CellError(
                    f"{path}: run {name} is of the cell {fields}, not {identity}. Fix: delete "
                    "this run file and its manifest so that the job trains it again."
                )
            if int(runs.steps[row]) != steps:
                raise cells.CellError(
                    f"{path}: run {name} has {int(runs.steps[row])} steps, expected {steps}. "
                    "Fix: delete this run file and its manifest so that the job trains it again."
                )
            seeds.append(int(runs.seed[row]))
            losses.append(runs.losses[row, :steps])
            evaluations.append(runs.evaluations[row, :steps])
            sidecars.append(_read_entries(runs, row))
    if not seeds:
        raise cells.CellError(f"no runs given for the cell {identity}.")
    order = np.argsort(seeds, kind="stable")
    sidecars = [sidecars[i] for i in order]
    loss_classes = {cells.loss_class_of(sidecar) for sidecar in sidecars}
    loss_kwargs = {json.dumps(cells.loss_kwargs_of(s), sort_keys=True) for s in sidecars}
    if len(loss_classes) > 1 or len(loss_kwargs) > 1:
        raise cells.CellError(
            f"the runs of the cell {identity} name different losses in their run files. "
            "Delete the cell's run files and manifests so that the pipeline trains them again."
        )
    heldout = [s.get("heldout") for s in sidecars]
    curves = [s.get("heldout_curve") or [] for s in sidecars]
    step_seconds = [(s.get("step_timing") or {}).get("seconds_per_step") for s in sidecars]
    return cells.CellRuns(
        identity,
        [seeds[i] for i in order],
        np.asarray(losses, dtype=np.float64)[order],
        np.asarray(evaluations, dtype=np.float64)[order],
        [h if isinstance(h, dict) else None for h in heldout],
        loss_classes.pop(),
        [c if isinstance(c, list) else [] for c in curves],
        [s if isinstance(s, int | float) else None for s in step_seconds],
        json.loads(loss_kwargs.pop()),
    )
