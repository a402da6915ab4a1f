"""Log-space summaries of losses that span orders of magnitude.

Scale. Final losses of one optimizer can range from 1e-15 to 1e-1 across
seeds; their arithmetic mean is one seed's value and a t-interval around it
goes negative. Everything here is computed on log10(loss):

- the geometric mean ``10**mean(log10 x)`` with the t-interval of the log10
  values, ``10**(mean +- t * sem)`` (a band that is positive by construction);
- the median with a distribution-free order-statistic interval: the interval
  between the l-th smallest and the l-th largest value, l chosen from the
  Binomial(n, 1/2) distribution of the number of values below the true median.
  Chosen over a bootstrap because it is exact, needs no random numbers and is
  vectorised over steps; its true coverage (at least the level asked) is
  reported. Below 6 values no pair of order statistics reaches 95 %, so the
  bounds are NaN rather than a band that claims more than it holds.
  The median is taken of the log10 values (for an even count, the geometric
  mean of the two middle values), consistent with a log axis.

Zeros. A loss of exactly 0 (or a positive subnormal) has no useful logarithm;
such values are raised to ``FLOOR``, the smallest positive normal float64
(2.2e-308), and counted in ``n_floored``. A caller may pass another floor.
A finite negative loss is an error: log-space statistics only fit losses that
are bounded below by 0 (shift the objective by its optimum first).

Divergence (the pipeline's documented rule, as in ``summary``): a run counts
as diverged from its first non-finite (inf or NaN) step on and is left out of
the statistics from there; ``n_diverged`` counts those runs. Rank-based
comparisons treat a diverged run differently (see ``log10_or_inf``).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from scipy import special

from optbench.reporting.intervals import minimum_n
from optbench.reporting.logscale import (  # noqa: F401  (re-exported: one implementation)
    _LARGEST,
    FLOOR,
    _per_count,
    check_non_negative,
    floored_log10,
    geo_interval,
    log_parts,
    mask_diverged,
    median_ranks,
    to_linear,
)

SUMMARY_COLUMNS = [
    "n",
    "n_finite",
    "n_diverged",
    "n_floored",
    "mean",
    "var",
    "log10_mean",
    "log10_sd",
    "geo_mean",
    "geo_low",
    "geo_high",
    "median",
    "median_low",
    "median_high",
    "median_coverage",
    "ci_method",
]


def require_columns(frame: pd.DataFrame, columns, what: str) -> None:
    """Raise a ValueError naming the columns that ``what`` needs and ``frame`` lacks."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} needs the column(s) {', '.join(missing)}; the table has "
            f"{', '.join(map(str, frame.columns))}. Pass the per-run metrics table."
        )


def log10_or_inf(values, floor: float = FLOOR) -> np.ndarray:
    """Floored log10 with every non-finite value (a diverged run) mapped to +inf.

    For rank-based comparisons and selection: dropping a diverged run would
    favour the optimizer that diverged on its hard seeds, so it counts as worse
    than any finite result, and two diverged runs tie.
    """
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), floored_log10(values, floor), np.inf)


@functools.lru_cache(maxsize=4096)
def t_quantile(dof: int, confidence: float = 0.95) -> float:
    # special.stdtrit is what scipy.stats.t.ppf computes (the same floats), without
    # importing scipy.stats: about 0.7 CPU-seconds of every job that reads a table
    # through this module (the plot, explorer and columnar jobs).
    return float(special.stdtrit(dof, 0.5 + confidence / 2.0))


def t_values(n_finite, confidence: float = 0.95) -> np.ndarray:
    """The two-sided t quantile for n_finite - 1 degrees of freedom (at least 1), per entry."""
    dof = np.maximum(np.asarray(n_finite, dtype=np.int64) - 1, 1)
    return _per_count(dof, lambda d: t_quantile(d, confidence))[:, 0]


def _method_text(n_finite: int, confidence: float, record: bool) -> str:
    record_part = "ci95: t (for the record); " if record else ""
    if n_finite < 2:
        t_part = f"{'ci95, ' if record else ''}geo: n too small"
    else:
        t_part = f"{record_part}geo: t on log10 ({n_finite - 1} df; if log-normal)"
    lower, coverage = median_ranks(n_finite, confidence)
    if lower == 0:
        median_part = f"median: n too small (< {minimum_n(confidence)})"
    else:
        median_part = (
            f"median: order statistics x({lower}), x({n_finite + 1 - lower}),"
            f" exact >= {100 * coverage:.1f} %"
        )
    return f"{t_part}; {median_part}"


def interval_methods(n_finite, confidence: float = 0.95, record: bool = False) -> np.ndarray:
    """Per entry of ``n_finite``: how its intervals were made (the ``ci_method`` column).

    The geometric mean's t-interval holds its level only where log10 losses
    are normal; the median's order-statistic interval holds it for any
    distribution. ``record``: also name the arithmetic mean's ``ci95`` (steps).
    """
    counts = np.asarray(n_finite, dtype=np.int64).ravel()
    if counts.size == 0:
        return np.array([], dtype=object)
    return _per_count(counts, lambda n: _method_text(n, confidence, record))[:, 0].astype(object)


def with_geo_interval(parts: dict, floor: float = FLOOR, confidence: float = 0.95) -> dict:
    """``logscale.log_parts`` with ``geo_low``/``geo_high`` added, in SUMMARY_COLUMNS order."""
    low, high = geo_interval(
        parts["log10_mean"],
        parts["log10_sd"],
        parts["n_finite"],
        t_values(parts["n_finite"], confidence),
        floor,
    )
    methods = interval_methods(parts["n_finite"], confidence)
    full = dict(parts, geo_low=low, geo_high=high, ci_method=methods)
    return {name: full[name] for name in SUMMARY_COLUMNS}


def _describe(alive: np.ndarray, runs: np.ndarray, floor: float, confidence: float) -> dict:
    return with_geo_interval(log_parts(alive, runs, floor, confidence), floor, confidence)


def log_describe(losses, floor: float = FLOOR, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Per-column (per-step) statistics of a runs x steps loss array, in log space.

    Applies the divergence rule itself. Returns arrays keyed by
    ``SUMMARY_COLUMNS``: counts; the arithmetic ``mean`` and ``var`` (ddof=1)
    of the raw values (for the table only, never for a ranking or a log band);
    ``log10_mean``/``log10_sd``; the geometric mean and its t-interval; the
    median, its order-statistic interval and that interval's coverage, and
    ``ci_method`` (``interval_methods``). Every bound is positive (clipped to
    [floor, float max]). A 1-D input is treated as one step (one value per run).
    """
    raw = np.asarray(losses, dtype=np.float64)
    if raw.ndim == 1:
        raw = raw[:, None]
    runs = np.full(raw.shape[1], raw.shape[0])
    return _describe(mask_diverged(raw), runs, floor, confidence)


def log_summary_table(
    frame: pd.DataFrame,
    by,
    column: str = "final_loss",
    floor: float = FLOOR,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per group of ``frame`` (grouped by the columns ``by``) with the
    ``log_describe`` statistics of ``column`` (one value per run; non-finite =
    diverged). Groups keep their order of first appearance."""
    by = list(by)
    require_columns(frame, [*by, column], "log_summary_table")
    if frame.empty:
        return pd.DataFrame(columns=[*by, *SUMMARY_COLUMNS])
    grouping = frame.groupby(by, sort=False, dropna=False)
    group = grouping.ngroup().to_numpy()
    position = grouping.cumcount().to_numpy()
    sizes = np.bincount(group, minlength=grouping.ngroups)
    # Each group becomes one column, padded with NaN below its runs: one vectorised call.
    padded = np.full((int(sizes.max(initial=0)), grouping.ngroups), np.nan)
    padded[position, group] = mask_diverged(frame[column].to_numpy(dtype=np.float64))
    described = _describe(padded, sizes, floor, confidence)
    keys = frame[by].drop_duplicates().reset_index(drop=True)
    return pd.concat([keys, pd.DataFrame(described)], axis=1)[[*by, *SUMMARY_COLUMNS]]
