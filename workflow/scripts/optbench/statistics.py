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
import warnings

import numpy as np
import pandas as pd
from scipy import stats

FLOOR = float(np.finfo(np.float64).tiny)
_LARGEST = float(np.finfo(np.float64).max)

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
]


def require_columns(frame: pd.DataFrame, columns, what: str) -> None:
    """Raise a ValueError naming the columns that ``what`` needs and ``frame`` lacks."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{what} needs the column(s) {', '.join(missing)}; the table has "
            f"{', '.join(map(str, frame.columns))}. Pass the per-run metrics table."
        )


def mask_diverged(losses) -> np.ndarray:
    """Float copy of ``losses`` with NaN from each run's first non-finite value on.

    2-D input is runs x steps; 1-D input is one value per run (e.g. final
    losses), where a non-finite value marks a diverged run.
    """
    values = np.asarray(losses, dtype=np.float64)
    bad = ~np.isfinite(values)
    if values.ndim == 2:
        bad = np.logical_or.accumulate(bad, axis=1)
    elif values.ndim != 1:
        raise ValueError(f"expected 1-D (runs) or 2-D (runs x steps) losses, got {values.ndim}-D")
    return np.where(bad, np.nan, values)


def _check_non_negative(values: np.ndarray) -> None:
    negative = values < 0  # NaN compares False
    if negative.any():
        raise ValueError(
            f"{int(negative.sum())} loss value(s) are negative"
            f" (smallest {float(values[negative].min())!r});"
            " log-space statistics need losses >= 0. Shift the objective by its optimum"
            " (report loss - reference value) or summarise it on the linear scale."
        )


def floored_log10(values, floor: float = FLOOR) -> np.ndarray:
    """log10 of ``values`` with values below ``floor`` (zeros) raised to it; NaN stays NaN."""
    values = np.asarray(values, dtype=np.float64)
    _check_non_negative(values)
    with np.errstate(invalid="ignore"):
        return np.log10(np.where(values < floor, floor, values))


def log10_or_inf(values, floor: float = FLOOR) -> np.ndarray:
    """Floored log10 with every non-finite value (a diverged run) mapped to +inf.

    For rank-based comparisons and selection: dropping a diverged run would
    favour the optimizer that diverged on its hard seeds, so it counts as worse
    than any finite result, and two diverged runs tie.
    """
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), floored_log10(values, floor), np.inf)


@functools.lru_cache(maxsize=4096)
def median_ranks(n: int, confidence: float = 0.95) -> tuple[int, float]:
    """(l, coverage): [x_(l), x_(n+1-l)] covers the median with probability ``coverage``.

    l is the largest rank (1-based) with P(B <= l - 1) <= (1 - confidence) / 2
    for B ~ Binomial(n, 1/2); coverage = 1 - 2 P(B <= l - 1) >= confidence.
    (0, nan) when no l >= 1 qualifies (n < 6 at 95 %).
    """
    tail = (1.0 - confidence) / 2.0
    cdf = stats.binom.cdf(np.arange(n + 1), n, 0.5)
    qualifying = np.flatnonzero(cdf <= tail)  # l - 1 values
    if n == 0 or qualifying.size == 0:
        return 0, float("nan")
    lower = int(qualifying[-1]) + 1
    return lower, float(1.0 - 2.0 * cdf[lower - 1])


def _to_linear(log_values: np.ndarray, floor: float) -> np.ndarray:
    # 10**x underflows to 0 below about -308 and overflows above 308; a band
    # on a log axis needs positive finite ends, so they are clipped.
    with np.errstate(over="ignore", under="ignore"):
        linear = np.power(10.0, log_values)
    return np.where(np.isnan(linear), np.nan, np.clip(linear, floor, _LARGEST))


@functools.lru_cache(maxsize=4096)
def _t_quantile(dof: int, confidence: float) -> float:
    return float(stats.t.ppf(0.5 + confidence / 2.0, dof))


def _per_count(n_finite: np.ndarray, function) -> np.ndarray:
    """``function(n)`` for each entry of n_finite, evaluated once per distinct n."""
    distinct, inverse = np.unique(n_finite, return_inverse=True)
    return np.array([function(int(n)) for n in distinct]).reshape(len(distinct), -1)[inverse]


def _describe(alive: np.ndarray, runs: np.ndarray, floor: float, confidence: float) -> dict:
    """The statistics of each column of ``alive`` (NaN = diverged or padding);
    ``runs`` is the number of runs each column stands for."""
    logs = floored_log10(alive, floor)
    n_finite = np.isfinite(alive).sum(axis=0)
    n_floored = (alive < floor).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns with 0 or 1 surviving run
        mean = np.nanmean(alive, axis=0)
        var = np.nanvar(alive, axis=0, ddof=1)
        log_mean = np.nanmean(logs, axis=0)
        log_sd = np.nanstd(logs, axis=0, ddof=1)
    several = n_finite >= 2
    var = np.where(several, var, np.nan)
    log_sd = np.where(several, log_sd, np.nan)
    t_value = _per_count(np.maximum(n_finite - 1, 1), lambda d: _t_quantile(d, confidence))[:, 0]
    half = t_value * log_sd / np.sqrt(np.maximum(n_finite, 1))

    # One sort gives the median and its order-statistic interval (NaN sorts last).
    ordered = np.vstack([np.sort(logs, axis=0), np.full((1, logs.shape[1]), np.nan)])
    columns = np.arange(logs.shape[1])

    def at(rank0):  # the value of 0-based rank ``rank0`` per column; NaN where out of range
        valid = (rank0 >= 0) & (rank0 < n_finite)
        return np.where(valid, ordered[np.where(valid, rank0, -1), columns], np.nan)

    log_median = (at((n_finite - 1) // 2) + at(n_finite // 2)) / 2.0
    ranks = _per_count(n_finite, lambda n: median_ranks(n, confidence))
    lower_rank, coverage = ranks[:, 0].astype(int), ranks[:, 1]
    usable = lower_rank >= 1
    median_low = np.where(usable, at(lower_rank - 1), np.nan)
    median_high = np.where(usable, at(n_finite - lower_rank), np.nan)
    return {
        "n": runs,
        "n_finite": n_finite,
        "n_diverged": runs - n_finite,
        "n_floored": n_floored,
        "mean": mean,
        "var": var,
        "log10_mean": log_mean,
        "log10_sd": log_sd,
        "geo_mean": _to_linear(log_mean, floor),
        "geo_low": _to_linear(log_mean - half, floor),
        "geo_high": _to_linear(log_mean + half, floor),
        "median": _to_linear(log_median, floor),
        "median_low": _to_linear(median_low, floor),
        "median_high": _to_linear(median_high, floor),
        "median_coverage": coverage,
    }


def log_describe(losses, floor: float = FLOOR, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """Per-column (per-step) statistics of a runs x steps loss array, in log space.

    Applies the divergence rule itself. Returns arrays keyed by
    ``SUMMARY_COLUMNS``: counts; the arithmetic ``mean`` and ``var`` (ddof=1)
    of the raw values (for the table only, never for a ranking or a log band);
    ``log10_mean``/``log10_sd``; the geometric mean and its t-interval; the
    median, its order-statistic interval and that interval's coverage. Every
    bound is positive (clipped to [floor, float max]). A 1-D input is treated
    as one step (one value per run).
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
