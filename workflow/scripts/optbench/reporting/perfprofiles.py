"""Dolan-More performance profiles and the AlgoPerf-style score across problems.

A "problem" p is a (problem, loss) block; its cost t_{p,s} for optimizer s is
the median over the evaluation seeds of steps to threshold, a censored run
counting as +inf (``block_costs``), so an optimizer reaches a block when more
than half of its seeds do. Any other cost table (e.g. per seed, or
evaluations to threshold) works the same way: costs must be positive, +inf
for "never reached", and complete (no missing optimizer).

- ratio r_{p,s} = t_{p,s} / min_s' t_{p,s'}; +inf when s never reached p,
  and for every s when no optimizer reached p (the block still counts).
- profile rho_s(tau) = share of blocks with r_{p,s} <= tau (a right-continuous
  step function of tau >= 1).
- score B_s = 1 / (r_max - 1) * integral_1^r_max rho_s(tau) dtau, r_max = 4.
  Integrated exactly: a block with ratio r adds the constant 1/P on
  [r, r_max], so B_s = mean over blocks of max(0, r_max - r) / (r_max - 1)
  (1 for a block it was fastest on, 0 for one it needed >= r_max times the
  best cost or never reached).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optbench.reporting.statistics import require_columns

R_MAX = 4.0


def block_costs(
    runs: pd.DataFrame, cost: str = "steps_to_threshold", by=("problem", "loss")
) -> pd.DataFrame:
    """Blocks (rows, MultiIndex ``by``) x optimizers: median ``cost`` over
    the runs of each, NaN (censored) counting as +inf. A missing optimizer
    stays NaN (``performance_ratios`` refuses it)."""
    by = list(by)
    require_columns(runs, [*by, "optimizer", cost], "block_costs")
    values = runs[cost].astype(np.float64).fillna(np.inf)
    grouped = values.groupby([*(runs[c] for c in by), runs["optimizer"]], sort=False).median()
    table = grouped.unstack("optimizer")
    return table[list(dict.fromkeys(runs["optimizer"]))]


def performance_ratios(costs: pd.DataFrame) -> pd.DataFrame:
    """r_{p,s} = t_{p,s} / min_s' t_{p,s'} (+inf where unreached)."""
    values = costs.to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        row, column = np.argwhere(np.isnan(values))[0]
        raise ValueError(
            f"cost missing for optimizer {costs.columns[column]!r} on block "
            f"{costs.index[row]!r}: profiles need every optimizer on every block "
            "(use +inf for never reached)."
        )
    if (values <= 0).any():
        raise ValueError(
            "costs must be positive: a cost of 0 (threshold met before any update) has no "
            "ratio. Use a relative threshold below 1, or evaluations_to_threshold."
        )
    best = values.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        ratios = np.where(np.isinf(best), np.inf, values / best)
    return pd.DataFrame(ratios, index=costs.index, columns=costs.columns)


def profile_taus(ratios: pd.DataFrame, r_max: float = R_MAX) -> np.ndarray:
    """Every tau in [1, r_max] where some rho_s jumps, plus both ends."""
    values = ratios.to_numpy(dtype=np.float64).ravel()
    inside = values[(values >= 1.0) & (values <= r_max)]
    return np.unique(np.concatenate([[1.0, r_max], inside]))


def performance_profile(ratios: pd.DataFrame, taus=None) -> pd.DataFrame:
    """rho_s(tau) for each tau (rows) and optimizer (columns); default taus:
    ``profile_taus``, enough to draw the step functions exactly."""
    taus = profile_taus(ratios) if taus is None else np.asarray(taus, dtype=np.float64)
    values = ratios.to_numpy(dtype=np.float64)
    rho = (values[None, :, :] <= taus[:, None, None]).mean(axis=1)
    return pd.DataFrame(rho, index=pd.Index(taus, name="tau"), columns=ratios.columns)


def profile_score(ratios: pd.DataFrame, r_max: float = R_MAX) -> pd.Series:
    """B_s per optimizer, the exact integral of its profile over [1, r_max]."""
    if not r_max > 1:
        raise ValueError(f"r_max must be > 1, got {r_max!r}")
    values = ratios.to_numpy(dtype=np.float64)
    share = np.clip(r_max - values, 0.0, None) / (r_max - 1.0)  # inf ratio -> 0
    return pd.Series(share.mean(axis=0), index=ratios.columns, name="score")
