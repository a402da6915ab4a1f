"""The combine step: per-cell summaries -> the step table and the per-run metrics table.

Every row takes its cell from the cell summary it comes from (which read it
from its runs' paths), never from the position of a file in a list; rows
follow the order in which the cells are given (the configuration's).

Step table (``steps.tsv``, evaluation seeds): the cell statistics with two t
intervals added, which need scipy's t quantile (so they are computed here,
once for all cells): ``ci95_low``/``ci95_high``, the arithmetic mean's
(mean -/+ t * sem; kept for the record, it goes negative for losses that span
decades and drives no ranking or figure) and ``geo_low``/``geo_high``, the
geometric mean's (10**(log10_mean -/+ t * log10_sd / sqrt(n_finite)),
positive by construction), and ``ci_method``, which says how each of the
three intervals was made, or why one is missing ("n too small"). The
comparison itself is made by
``optbench.reporting.analysis`` from the per-run table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from optbench import grid, runfiles
from optbench.reporting import cells, statistics

IDENTITY = list(grid.CELL_FIELDS)  # as in run paths


def _with_after(names: list[str], anchor: str, added: list[str]) -> list[str]:
    position = names.index(anchor) + 1
    return [*names[:position], *added, *names[position:]]


STEP_STATISTICS = [
    *_with_after(
        _with_after(cells.CELL_STATISTICS, "sem", ["ci95_low", "ci95_high"]),
        "geo_mean",
        ["geo_low", "geo_high"],
    ),
    "ci_method",
]
RUN_TABLE_COLUMNS = ["role", *IDENTITY, *cells.RUN_COLUMNS]


def combine(cell_paths, role: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The step table and the run table of the cell summaries at ``cell_paths``.

    With ``role``, the run table starts with a ``role`` column holding it.
    """
    step_frames, run_frames, seen = [], [], {}
    for path in cell_paths:
        data = cells.read_cell_summary(path)
        identity = data["cell"]
        key = tuple(identity.items())
        if key in seen:
            raise cells.CellError(f"{path}: the cell {identity} is also in {seen[key]}.")
        seen[key] = path
        steps, runs = pd.DataFrame(data["steps"]), pd.DataFrame(data["runs"])
        for position, (field, value) in enumerate(identity.items()):
            steps.insert(position, field, value)
            runs.insert(position, field, value)
        if role is not None:
            runs.insert(0, "role", role)
        step_frames.append(steps)
        run_frames.append(runs)
    if not step_frames:
        raise cells.CellError("no cell summaries given.")
    steps = with_intervals(pd.concat(step_frames, ignore_index=True))
    return steps, pd.concat(run_frames, ignore_index=True)


def with_intervals(steps: pd.DataFrame) -> pd.DataFrame:
    """Adds the arithmetic and the geometric mean's t intervals and ``ci_method`` (module doc)."""
    t = statistics.t_values(steps["n_finite"].to_numpy())
    half_width = t * steps["sem"].to_numpy()
    steps = steps.copy()
    steps["ci95_low"] = steps["mean"].to_numpy() - half_width
    steps["ci95_high"] = steps["mean"].to_numpy() + half_width
    steps["geo_low"], steps["geo_high"] = statistics.geo_interval(
        steps["log10_mean"].to_numpy(), steps["log10_sd"].to_numpy(), steps["n_finite"], t
    )
    steps["ci_method"] = statistics.interval_methods(steps["n_finite"].to_numpy(), record=True)
    return steps[identity_columns(steps) + ["step", *STEP_STATISTICS]]


def identity_columns(table: pd.DataFrame) -> list[str]:
    """The cell's fields: the columns before ``step`` (steps) or ``seed`` (runs), less role."""
    columns = list(table.columns)
    fields = columns[: columns.index("step" if "step" in columns else "seed")]
    return [field for field in fields if field != "role"]


def selected_rows(table: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` that belong to a selected (problem, loss, optimizer, variant)."""
    keys = selection[[c for c in IDENTITY if c in selection.columns]]
    return table.merge(keys, on=list(keys.columns), how="inner", sort=False)


def write_tsv(frame: pd.DataFrame, path) -> None:
    with runfiles.atomic_path(path) as temporary:
        frame.to_csv(temporary, sep="\t", index=False, na_rep="nan")


def read_tsv(path) -> pd.DataFrame:
    """A table written by ``write_tsv`` (``nan`` is the only missing value)."""
    return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["nan"])


def cell_summary_path(summary_dir, identity: dict[str, str], role: str = "evaluation") -> Path:
    """Where the pipeline keeps a cell's summary: cells/{role}/{problem}/.../{variant}.json."""
    *folders, name = identity.values()
    return Path(summary_dir, "cells", role, *folders, f"{name}.json")


def summarize_cells(
    run_paths, pattern: str, steps: int, summary_dir, role: str = "evaluation", threshold=None
) -> list[Path]:
    """What the summarize_cell jobs do, in one process: one summary per cell.

    Cells are taken in the order of their first run in ``run_paths``;
    ``threshold``: a ``cells.Threshold`` (default) or a mapping
    (problem, loss) -> Threshold. Returns the summaries' paths.
    """
    grouped: dict[tuple, list[str]] = {}
    for path in run_paths:
        fields = cells.parse_run_path(pattern, path)
        cell = tuple((k, v) for k, v in fields.items() if k != cells.SEED_FIELD)
        grouped.setdefault(cell, []).append(str(path))
    cell_paths = []
    for cell, paths in grouped.items():
        identity = dict(cell)
        level = threshold or cells.Threshold()
        if isinstance(level, dict):
            level = level.get((identity.get("problem"), identity.get("loss")), cells.Threshold())
        path = cell_summary_path(summary_dir, identity, role)
        cells.write_cell_summary(cells.read_cell(paths, pattern, identity, steps), path, level)
        cell_paths.append(path)
    return cell_paths
