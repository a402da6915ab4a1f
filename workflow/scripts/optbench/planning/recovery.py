"""Files the rules would not ask for again by themselves: asked for as targets,
they are re-made, and whatever follows from them.

Snakemake re-makes a missing file only for a job that has to run, and a
missing input does not make its consumers out of date.
"""

from __future__ import annotations

import os

from optbench import reuse


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


def set_aside(manifest: str) -> None:
    """Moves a job's manifest to <manifest>.previous: its job, an output missing,
    runs again and reuses the runs that are still as the manifest lists them."""
    os.replace(manifest, f"{manifest}{reuse.PREVIOUS}")


def set_aside_manifests(manifests, exists=os.path.exists) -> list[str]:
    """The manifests set aside (a run changed or deleted by hand: planning.status)
    whose job has not run since: asked
    for as targets, their jobs run (a missing output alone would not make
    Snakemake run a job whose consumers are up to date)."""
    return [m for m in manifests if not exists(m) and exists(f"{m}{reuse.PREVIOUS}")]
