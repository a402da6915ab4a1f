"""The combine step: per-cell summaries -> step summary, variant selection and leaderboard.

Every row takes its cell from the cell summary it comes from (which read it
from its runs' paths), never from the position of a file in a list; rows
follow the order in which the cells are given (the configuration's).

Variant selection (an optimizer's sweep gives it several variants): for each
(problem, loss, optimizer) the variant with the lowest median, over the TUNING
seeds, of the final log10 loss; a run that diverged counts as +inf; ties go to
the variant listed first (the sweep's order). The swept variants are the
candidates; the base variant (the kwargs as configured, the untuned one-shot
setting) is chosen only where there is no sweep. Evaluation seeds play no part
in the choice, so the comparison on them carries no selection bias.

Leaderboard decision rules (each pinned by a test in tests/test_summary.py),
applied to each optimizer's selected variant on the evaluation seeds:

- Optimizers are ranked within each (problem, loss) by ``RANK_BY`` of the final step: the
  mean final loss over the runs that have not diverged, lowest first.
- Ties share the lower rank and the next rank is skipped (1, 1, 3).
- An optimizer whose runs all diverged has no mean and ranks after every
  other (several such share that last rank).
- ``p_vs_best`` is a paired t-test (same seeds, so the same initial weights) of
  each optimizer's final loss against the optimizer listed first in its loss
  (rank 1; among tied ones the first by name), over the seeds where both runs
  are finite at the last step: NaN for that optimizer itself and with fewer
  than two pairs, 1.0 when every pair is equal.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

from optbench import cells, runfiles

IDENTITY = ["problem", "loss", "optimizer", "variant"]  # the cell's fields, as in run paths
# The cell statistics with the 95 % t confidence interval of the mean after sem.
STEP_STATISTICS = [*cells.CELL_STATISTICS[:7], "ci95_low", "ci95_high", *cells.CELL_STATISTICS[7:]]
STEP_COLUMNS = [*IDENTITY, "step", *STEP_STATISTICS]
LEADERBOARD_COLUMNS = [*IDENTITY, *STEP_STATISTICS, "rank", "p_vs_best"]
RANK_BY = "mean"
# Ranked within each group of the cell's other fields, one variant per optimizer.
COMPARED = ("optimizer", "variant")
BASE_VARIANT = "base"
SELECTION_SCORES = ["n_tuning", "median_log10_final"]
SELECTION_COLUMNS = ["problem", "loss", "optimizer", "variant", *SELECTION_SCORES]


def combine(cell_paths) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The step table and the run table of the cell summaries at ``cell_paths``."""
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
        step_frames.append(steps)
        run_frames.append(runs)
    if not step_frames:
        raise cells.CellError("no cell summaries given.")
    steps = with_confidence_interval(pd.concat(step_frames, ignore_index=True))
    return steps, pd.concat(run_frames, ignore_index=True)


def with_confidence_interval(steps: pd.DataFrame) -> pd.DataFrame:
    """Adds the 95 % t interval of the mean: mean -/+ t(0.975, n_finite - 1) * sem."""
    # special.stdtrit is scipy.stats.t.ppf without its overhead (same values).
    t = special.stdtrit(np.maximum(steps["n_finite"].to_numpy() - 1, 1), 0.975)
    half_width = t * steps["sem"].to_numpy()
    steps = steps.copy()
    steps["ci95_low"] = steps["mean"].to_numpy() - half_width
    steps["ci95_high"] = steps["mean"].to_numpy() + half_width
    return steps[identity_columns(steps) + ["step", *STEP_STATISTICS]]


def identity_columns(table: pd.DataFrame) -> list[str]:
    """The cell's fields: the columns before ``step`` (steps) or ``seed`` (runs)."""
    columns = list(table.columns)
    return columns[: columns.index("step" if "step" in columns else "seed")]


def used_finals(runs: pd.DataFrame) -> dict[tuple, dict[int, float]]:
    """cell -> {seed: final loss}, NaN where the run diverged at or before the last step."""
    identity = identity_columns(runs)
    finals: dict[tuple, dict[int, float]] = {}
    for row in runs.itertuples(index=False):
        record = row._asdict()
        diverged = record["first_nonfinite_step"] is not None and not pd.isna(
            record["first_nonfinite_step"]
        )
        value = math.nan if diverged else float(record["final_loss"])
        cell = tuple(record[field] for field in identity)
        finals.setdefault(cell, {})[int(record["seed"])] = value
    return finals


def paired_p(best: dict[int, float], other: dict[int, float]) -> float:
    """Paired t-test p-value over the seeds where both final losses are finite."""
    pairs = [
        (best[seed], other[seed])
        for seed in best
        if seed in other and math.isfinite(best[seed]) and math.isfinite(other[seed])
    ]
    if len(pairs) < 2:
        return math.nan
    a, b = np.array(pairs).T
    if np.all(a - b == 0):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def leaderboard(steps: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Final-step statistics per cell, ranked within each loss (rules in the module doc)."""
    identity = identity_columns(steps)
    groups = [field for field in identity if field not in COMPARED]
    compared = [field for field in identity if field in COMPARED]
    last = steps.groupby(identity, sort=False)["step"].transform("max")
    final = steps[steps["step"] == last].drop(columns="step").reset_index(drop=True)
    ranks = final.groupby(groups)[RANK_BY].rank(method="min", na_option="bottom")
    final["rank"] = ranks.astype(int)
    final = final.sort_values([*groups, "rank", *compared], kind="stable").reset_index(drop=True)
    finals = used_finals(runs)
    p_values = []
    for _, group in final.groupby(groups, sort=False):
        cells_in_order = [tuple(row) for row in group[identity].itertuples(index=False)]
        best = cells_in_order[0]
        for cell in cells_in_order:
            p_values.append(math.nan if cell == best else paired_p(finals[best], finals[cell]))
    final["p_vs_best"] = p_values
    return final


def select_variants(steps: pd.DataFrame, tuning_runs: pd.DataFrame | None) -> pd.DataFrame:
    """Each (problem, loss, optimizer)'s variant, picked on the tuning runs (module doc).

    Generic over the cell's fields: the choice is made within each group of
    the fields other than ``variant``; cells without a variant field are all kept.
    """
    identity = identity_columns(steps)
    cells = steps[identity].drop_duplicates()
    if "variant" not in identity:
        return cells.assign(n_tuning=0, median_log10_final=math.nan).reset_index(drop=True)
    groups = [field for field in identity if field != "variant"]
    scores: dict[tuple, tuple[int, float]] = {}
    if tuning_runs is not None and len(tuning_runs):
        for key, runs in tuning_runs.groupby(identity, sort=False):
            finals = runs["final_loss"].to_numpy(dtype=float)
            diverged = runs["first_nonfinite_step"].notna().to_numpy()
            with np.errstate(divide="ignore"):
                logs = np.where(diverged | ~np.isfinite(finals), np.inf, np.log10(finals))
            scores[key] = (len(logs), float(np.median(logs)))
    rows = []
    for key, group in cells.groupby(groups, sort=False):
        variants = list(group["variant"])
        candidates = [v for v in variants if v != BASE_VARIANT] or variants
        scored = [(v, scores.get((*key, v))) for v in candidates]
        scored = [(v, score) for v, score in scored if score is not None]
        if scored:
            # min() keeps the first of equal scores: the variant listed first.
            variant, (n, median) = min(scored, key=lambda item: item[1][1])
        else:
            variant = BASE_VARIANT if BASE_VARIANT in variants else variants[0]
            n, median = 0, math.nan
        rows.append([*key, variant, n, median])
    return pd.DataFrame(rows, columns=[*groups, "variant", "n_tuning", "median_log10_final"])


def selected_rows(table: pd.DataFrame, selection: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``table`` that belong to a selected (problem, loss, optimizer, variant)."""
    keys = selection[[c for c in selection.columns if c not in SELECTION_SCORES]]
    return table.merge(keys, on=list(keys.columns), how="inner", sort=False)


def write_tsv(frame: pd.DataFrame, path) -> None:
    with runfiles.atomic_path(path) as temporary:
        frame.to_csv(temporary, sep="\t", index=False, na_rep="nan")


def summarize(
    cell_paths, steps_path, leaderboard_path, selection_path=None, tuning_paths=()
) -> None:
    """The combine rule: step summary, variant selection and leaderboard from the cells."""
    steps, runs = combine(cell_paths)
    tuning_runs = combine(tuning_paths)[1] if len(tuning_paths) else None
    selection = select_variants(steps, tuning_runs)
    board = leaderboard(selected_rows(steps, selection), runs)
    write_tsv(steps, steps_path)
    write_tsv(board, leaderboard_path)
    if selection_path is not None:
        write_tsv(selection, selection_path)


def cell_summary_path(summary_dir, identity: dict[str, str], role: str = "evaluation") -> Path:
    """Where the pipeline keeps a cell's summary: cells/{role}/{problem}/.../{variant}.json."""
    *folders, name = identity.values()
    return Path(summary_dir, "cells", role, *folders, f"{name}.json")


def summarize_runs(run_paths, pattern: str, steps: int, summary_dir) -> None:
    """What the rules do, in one process: a summary per cell, then the tables.

    For tools and tests that train in-process, with evaluation seeds only (so
    each optimizer keeps its base variant); cells are taken in the order of
    their first run in ``run_paths``.
    """
    grouped: dict[tuple, list[str]] = {}
    for path in run_paths:
        fields = cells.parse_run_path(pattern, path)
        cell = tuple((k, v) for k, v in fields.items() if k != cells.SEED_FIELD)
        grouped.setdefault(cell, []).append(str(path))
    cell_paths = []
    for cell, paths in grouped.items():
        identity = dict(cell)
        path = cell_summary_path(summary_dir, identity)
        cells.write_cell_summary(cells.read_cell(paths, pattern, identity, steps), path)
        cell_paths.append(path)
    summary_dir = Path(summary_dir)
    summarize(
        cell_paths,
        summary_dir / "steps.tsv",
        summary_dir / "leaderboard.tsv",
        summary_dir / "selection.tsv",
    )
