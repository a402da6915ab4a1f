"""Per-run metrics from a runs x steps loss array: one row per run.

Step ``s`` of a run TSV holds the loss of the forward pass made before the
(s+1)-th update, so the loss at step s is the loss after s updates.

Columns of ``run_metrics`` (``METRIC_COLUMNS``):

- ``initial_loss``: the loss at step 0.
- ``final_loss``: the loss at the last step, raised to the run's resolution
  floor (see ``resolution_floor``); NaN when the run diverged (divergence
  rule of ``statistics``: from the first non-finite step on).
- ``best_loss``: the smallest loss before divergence, raised to the floor
  likewise (NaN if step 0 diverged).
- ``auc_log10``: mean over all steps of log10(loss), each loss raised to the
  floor, the area under the log-loss curve per step; NaN when the run diverged.
- ``resolution_floor``: the loss level below which float32 rounding decides
  (``optbench.reporting.resolution``; float64's smallest positive number when not
  known): losses at or below it are tied at it in every comparison.
- ``at_floor``: 1 when the final loss (before raising) is at or below the
  floor, else 0.
- ``threshold``: the loss level the run had to reach: ``threshold`` times its
  initial loss (``relative=True``, the default: 1e-3, a 99.9 % reduction) or
  ``threshold`` itself (``relative=False``).
- ``steps_to_threshold``: the first step s whose loss is <= that level, i.e.
  the number of updates it took; NaN (censored) when never reached before the
  end or before divergence. ``threshold_share`` gives the share that reached.
- ``evaluations``: loss evaluations over the whole run (sum of the per-step
  counts; one per step when no counts are given).
- ``evaluations_to_threshold``: evaluations up to and including the one that
  first saw the level (sum of the counts of steps 0..s-1, plus 1); NaN when
  censored. Lets L-BFGS (several evaluations per step) be compared per
  evaluation.
- ``first_nonfinite_step``: the first step with inf/NaN loss; NaN when none.
"""

from __future__ import annotations

import numpy as np

# numpy only at import: the per-cell summary job computes these metrics, and
# pandas/scipy would double its start-up. pandas is imported where a table is made.
from optbench.reporting.logscale import FLOOR, floored_log10, mask_diverged

METRIC_COLUMNS = [
    "initial_loss",
    "final_loss",
    "best_loss",
    "auc_log10",
    "threshold",
    "steps_to_threshold",
    "evaluations",
    "evaluations_to_threshold",
    "first_nonfinite_step",
    "resolution_floor",
    "at_floor",
]


def _first_true(mask: np.ndarray) -> np.ndarray:
    """Index of the first True per row as float, NaN when a row has none."""
    first = np.argmax(mask, axis=1).astype(np.float64)
    return np.where(mask.any(axis=1), first, np.nan)


def run_metrics(
    losses,
    evaluations=None,
    *,
    threshold: float = 1e-3,
    relative: bool = True,
    floor: float = FLOOR,
    resolution=None,
):
    """The metrics above for each row of ``losses`` (runs x steps), in row order,
    as a pandas DataFrame.

    ``evaluations``: optional runs x steps array of loss evaluations per step.
    ``resolution``: optional per-run resolution floors (``optbench.reporting.resolution``).
    """
    import pandas as pd

    metrics = metric_arrays(
        losses,
        evaluations,
        threshold=threshold,
        relative=relative,
        floor=floor,
        resolution=resolution,
    )
    return pd.DataFrame(metrics, columns=METRIC_COLUMNS)


def metric_arrays(
    losses,
    evaluations=None,
    *,
    threshold: float = 1e-3,
    relative: bool = True,
    floor: float = FLOOR,
    resolution=None,
) -> dict[str, np.ndarray]:
    """``run_metrics`` as a dict of arrays keyed by ``METRIC_COLUMNS`` (numpy only)."""
    raw = np.asarray(losses, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] == 0:
        raise ValueError(f"losses must be a runs x steps array with >= 1 step, got {raw.shape}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold!r}")
    counts = np.ones_like(raw) if evaluations is None else np.asarray(evaluations, np.float64)
    if counts.shape != raw.shape or (counts < 0).any():
        raise ValueError(
            f"evaluations must be a non-negative array of the losses' shape {raw.shape},"
            f" got shape {counts.shape}"
        )
    alive = mask_diverged(raw)
    runs = raw.shape[0]
    floors = np.full(runs, floor) if resolution is None else np.asarray(resolution, np.float64)
    if floors.shape != (runs,):
        raise ValueError(f"resolution must hold one floor per run ({runs}), got {floors.shape}")
    with np.errstate(invalid="ignore"):
        at_floor = alive[:, -1] <= floors  # NaN (diverged) is not at the floor
    lifted = np.maximum(alive, floors[:, None])  # NaN stays NaN
    logs = floored_log10(lifted, floor)
    diverged = np.isnan(alive[:, -1])
    level = threshold * raw[:, 0] if relative else np.full(raw.shape[0], float(threshold))
    with np.errstate(invalid="ignore"):
        reached = alive <= level[:, None]  # NaN (diverged) never counts as reached
    steps_to = _first_true(reached)
    before = np.concatenate([np.zeros((raw.shape[0], 1)), np.cumsum(counts, axis=1)], axis=1)
    to_index = np.where(np.isnan(steps_to), 0, steps_to).astype(int)
    evaluations_to = np.where(
        np.isnan(steps_to), np.nan, before[np.arange(raw.shape[0]), to_index] + 1
    )
    finite_any = np.isfinite(alive).any(axis=1)
    best = np.full(raw.shape[0], np.nan)
    best[finite_any] = np.nanmin(lifted[finite_any], axis=1)
    return {
        "initial_loss": raw[:, 0],
        "final_loss": lifted[:, -1],
        "best_loss": best,
        "auc_log10": np.where(diverged, np.nan, logs.mean(axis=1)),
        "threshold": level,
        "steps_to_threshold": steps_to,
        "evaluations": counts.sum(axis=1),
        "evaluations_to_threshold": evaluations_to,
        "first_nonfinite_step": _first_true(~np.isfinite(raw)),
        "resolution_floor": floors,
        "at_floor": at_floor.astype(np.float64),
    }


def oscillation(losses) -> np.ndarray:
    """Upward variation over the second half, relative to the initial loss, per run.

    The sum of the rises L[t+1] - L[t] > 0 for t >= T // 2, divided by the
    run's initial loss: 0 for a monotone decreasing curve, on the linear scale
    (float noise near 1e-15 does not count); +inf for a diverged run.
    """
    raw = np.asarray(losses, dtype=np.float64)
    alive = mask_diverged(raw)
    tail = alive[:, raw.shape[1] // 2 :]
    rises = np.clip(np.diff(tail, axis=1), 0.0, None).sum(axis=1) / raw[:, 0]
    return np.where(np.isnan(alive[:, -1]), np.inf, rises)


def threshold_share(metrics, by):
    """Per group: ``n`` runs, ``n_reached`` (steps_to_threshold not censored), ``share``."""
    from optbench.reporting.statistics import require_columns

    by = list(by)
    require_columns(metrics, [*by, "steps_to_threshold"], "threshold_share")
    reached = metrics["steps_to_threshold"].notna()
    table = reached.groupby([metrics[c] for c in by], sort=False).agg(["size", "sum"])
    table = table.rename(columns={"size": "n", "sum": "n_reached"}).reset_index()
    table["n_reached"] = table["n_reached"].astype(int)
    table["share"] = table["n_reached"] / table["n"]
    return table
