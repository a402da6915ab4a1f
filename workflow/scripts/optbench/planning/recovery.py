"""Files the rules would not ask for again by themselves: asked for as targets,
they are re-made, and whatever follows from them.

Snakemake re-makes a missing file only for a job that has to run, and a
missing input does not make its consumers out of date.
"""

from __future__ import annotations

import os

from optbench import reuse, runfiles


def lost_runs(training_jobs, run_patterns, exists=os.path.exists) -> list[str]:
    """Run files missing while the manifest of their packed training job exists.

    The summary jobs of packed layouts take the manifests as input, not the runs,
    so nothing would ask for a deleted run file again; asked for, it makes its
    training job run again, and the summaries after it. ``run_patterns``: the
    TSV and sidecar path patterns."""
    lost = []
    for job in training_jobs:
        if exists(job.log("manifests", ".tsv")):
            for cell in job.cells:
                for seed in job.seeds:
                    for pattern in run_patterns:
                        path = pattern.format(seed=seed, **vars(cell))
                        if not exists(path):
                            lost.append(path)
    return lost


def lost_cell_summaries(
    step_summary, cells, roles, summary_pattern, run_pattern, exists=os.path.exists
) -> list[str]:
    """Cell summaries missing while the tables made from them exist.

    A cell summary goes missing when its job fails or is interrupted (its output
    is removed), often after its runs changed; asked for, it is made again, and
    the tables after it. A new cell (runs not all there yet) is left to the rules.
    ``roles``: seed role -> its seeds."""
    if not exists(step_summary):
        return []
    lost = []
    for role, seeds in roles.items():
        for cell in cells:
            summary = summary_pattern.format(role=role, **vars(cell))
            if seeds and not exists(summary):
                runs = [run_pattern.format(seed=seed, **vars(cell)) for seed in seeds]
                if all(exists(run) for run in runs):
                    lost.append(summary)
    return lost


def changed_runs(manifests, exists=os.path.exists) -> dict[str, list[str]]:
    """Manifest -> its run TSVs that differ from what the manifest recorded (edited
    or corrupted by hand since), for the ``manifests`` that exist.

    Snakemake would say "Nothing to be done": a job's own outputs never make it
    rerun. One stat per run; a TSV is hashed only when its size or modification
    time changed. A missing run is left to lost_runs and the rules."""
    changed = {}
    for manifest in manifests:
        try:
            entries = runfiles.read_manifest_entries(manifest)
            written = os.stat(manifest).st_mtime_ns
        except (OSError, runfiles.RunFileError):
            continue  # no manifest (a job never finished): nothing recorded to compare
        found = [
            e.tsv
            for e in entries
            if exists(e.tsv) and not runfiles.unchanged_since(e, manifest_mtime_ns=written)
        ]
        if found:
            changed[manifest] = found
    return changed


def set_aside(manifest: str) -> None:
    """Moves a job's manifest to <manifest>.previous: its job, an output missing,
    runs again and reuses the runs that are still as the manifest lists them."""
    os.replace(manifest, f"{manifest}{reuse.PREVIOUS}")


def set_aside_manifests(manifests, exists=os.path.exists) -> list[str]:
    """The manifests set aside (a run changed) whose job has not run since: asked
    for as targets, their jobs run (a missing output alone would not make
    Snakemake run a job whose consumers are up to date)."""
    return [m for m in manifests if not exists(m) and exists(f"{m}{reuse.PREVIOUS}")]
