"""Across-seed statistics of the run TSVs: per-step summaries and the final leaderboard.

Divergence rule: a run counts as diverged from the first step at which its
loss is not finite (inf or NaN) onwards, because its weights are no longer
meaningful after that. At each step the statistics use the runs that have not
diverged yet; ``n`` counts all runs, ``n_finite`` the ones used and
``n_diverged`` the rest. A step where no run is left has NaN statistics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from optbench import runfiles

STEP_COLUMNS = [
    "loss",
    "optimizer",
    "step",
    "n",
    "n_finite",
    "n_diverged",
    "mean",
    "var",
    "std",
    "sem",
    "ci95_low",
    "ci95_high",
    "median",
    "min",
    "max",
]


@dataclass(frozen=True)
class RunRef:
    loss: str
    optimizer: str
    seed: int
    path: str


def read_cells(
    runs: list[RunRef], steps: int
) -> dict[tuple[str, str], tuple[list[int], np.ndarray]]:
    """(loss, optimizer) -> (seeds, losses array of shape seeds x steps), in input order."""
    grouped: dict[tuple[str, str], tuple[list[int], list[list[float]]]] = {}
    for run in runs:
        seeds, rows = grouped.setdefault((run.loss, run.optimizer), ([], []))
        seeds.append(run.seed)
        rows.append(runfiles.read_run(run.path, steps))
    return {
        cell: (seeds, np.array(rows, dtype=np.float64)) for cell, (seeds, rows) in grouped.items()
    }


def surviving(losses: np.ndarray) -> np.ndarray:
    """The losses with every value from a run's first non-finite step on replaced by NaN."""
    diverged = np.logical_or.accumulate(~np.isfinite(losses), axis=1)
    return np.where(diverged, np.nan, losses)


def describe(losses: np.ndarray) -> dict[str, np.ndarray]:
    """Column statistics of a runs x steps array (NaN marks a diverged run)."""
    used = np.isfinite(losses)
    n_finite = used.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN or single-run steps
        mean = np.nanmean(losses, axis=0)
        var = np.nanvar(losses, axis=0, ddof=1)
        median = np.nanmedian(losses, axis=0)
        low, high = np.nanmin(losses, axis=0), np.nanmax(losses, axis=0)
    var = np.where(n_finite >= 2, var, np.nan)
    std = np.sqrt(var)
    sem = std / np.sqrt(np.maximum(n_finite, 1))
    half_width = stats.t.ppf(0.975, np.maximum(n_finite - 1, 1)) * sem
    return {
        "n": np.full(losses.shape[1], losses.shape[0]),
        "n_finite": n_finite,
        "n_diverged": losses.shape[0] - n_finite,
        "mean": mean,
        "var": var,
        "std": std,
        "sem": sem,
        "ci95_low": mean - half_width,
        "ci95_high": mean + half_width,
        "median": median,
        "min": low,
        "max": high,
    }


def step_table(cells) -> pd.DataFrame:
    frames = []
    for (loss, optimizer), (_, losses) in cells.items():
        columns = describe(surviving(losses))
        steps = losses.shape[1]
        frames.append(
            pd.DataFrame(
                {"loss": [loss] * steps, "optimizer": [optimizer] * steps, "step": np.arange(steps)}
                | columns
            )
        )
    return pd.concat(frames, ignore_index=True)[STEP_COLUMNS]


def leaderboard(cells, table: pd.DataFrame) -> pd.DataFrame:
    """Final-step statistics per cell, ranked by mean final loss within each loss.

    ``p_vs_best`` is a paired t-test (same seeds, so same initial weights) of
    each optimizer's final loss against the rank-1 optimizer of its loss.
    """
    final = table[table["step"] == table.groupby(["loss", "optimizer"])["step"].transform("max")]
    final = final.drop(columns="step").reset_index(drop=True)
    final["rank"] = final.groupby("loss")["mean"].rank(method="min", na_option="bottom").astype(int)
    p_values = []
    for row in final.itertuples():
        best = final[(final["loss"] == row.loss) & (final["rank"] == 1)].iloc[0]
        p_values.append(_paired_p(cells, row.loss, best["optimizer"], row.optimizer))
    final["p_vs_best"] = p_values
    return final.sort_values(["loss", "rank", "optimizer"], kind="stable").reset_index(drop=True)


def _paired_p(cells, loss: str, best: str, other: str) -> float:
    if best == other:
        return float("nan")
    seeds_a, losses_a = cells[(loss, best)]
    seeds_b, losses_b = cells[(loss, other)]
    final_a = dict(zip(seeds_a, surviving(losses_a)[:, -1], strict=True))
    final_b = dict(zip(seeds_b, surviving(losses_b)[:, -1], strict=True))
    pairs = [
        (final_a[s], final_b[s])
        for s in final_a
        if s in final_b and np.isfinite(final_a[s]) and np.isfinite(final_b[s])
    ]
    if len(pairs) < 2:
        return float("nan")
    a, b = np.array(pairs).T
    if np.all(a - b == 0):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def write_tsv(frame: pd.DataFrame, path) -> None:
    with runfiles.atomic_path(path) as temporary:
        frame.to_csv(temporary, sep="\t", index=False, na_rep="nan")


def summarize(runs: list[RunRef], steps: int, steps_path, leaderboard_path) -> None:
    cells = read_cells(runs, steps)
    table = step_table(cells)
    write_tsv(table, steps_path)
    write_tsv(leaderboard(cells, table), leaderboard_path)
