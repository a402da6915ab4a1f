"""The numpy-only core of the log-space statistics (see ``optbench.reporting.statistics``).

Split out so that the per-cell summary job, which runs once per grid cell on
the submitting host, computes the same numbers without importing scipy or
pandas (about 1 s per process). Only the t quantile of the geometric mean's
interval needs scipy; ``log_parts`` leaves that interval out and
``geo_interval`` adds it from the quantile (``statistics`` supplies it).
"""

from __future__ import annotations

import functools
import warnings
from fractions import Fraction

import numpy as np

FLOOR = float(np.finfo(np.float64).tiny)
_LARGEST = float(np.finfo(np.float64).max)


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


def check_non_negative(values: np.ndarray) -> None:
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
    check_non_negative(values)
    with np.errstate(invalid="ignore"):
        return np.log10(np.where(values < floor, floor, values))


@functools.lru_cache(maxsize=4096)
def median_ranks(n: int, confidence: float = 0.95) -> tuple[int, float]:
    """(l, coverage): [x_(l), x_(n+1-l)] covers the median with probability ``coverage``.

    l is the largest rank (1-based) with P(B <= l - 1) <= (1 - confidence) / 2
    for B ~ Binomial(n, 1/2); coverage = 1 - 2 P(B <= l - 1) >= confidence.
    (0, nan) when no l >= 1 qualifies (n < 6 at 95 %). Exact: the binomial
    probabilities are integer counts over 2**n.
    """
    tail = (1.0 - confidence) / 2.0
    power = 1 << n
    # C(n, below) carried from one term to the next (exact integers): computing each
    # term afresh with math.comb made this quadratic, 105 s at n = 12,500 seeds.
    # Below half the tail (exact integers) the float comparison cannot break: skipped.
    far = int(Fraction(tail) * power / 2)
    term, cumulative, lower, kept = 1, 0, 0, 0
    for below in range(n + 1):  # below = l - 1
        cumulative += term
        if cumulative > far and cumulative / power > tail:
            break
        lower, kept = below + 1, cumulative  # kept: the sum of C(n, i) for i < lower
        term = term * (n - below) // (below + 1)
    if n == 0 or lower == 0:
        return 0, float("nan")
    return lower, float(1.0 - 2.0 * (kept / power))


def to_linear(log_values, floor: float = FLOOR) -> np.ndarray:
    """10**x with the ends clipped to [floor, float max], so a log axis can draw them."""
    with np.errstate(over="ignore", under="ignore"):
        linear = np.power(10.0, np.asarray(log_values, dtype=np.float64))
    return np.where(np.isnan(linear), np.nan, np.clip(linear, floor, _LARGEST))


def _per_count(n_finite: np.ndarray, function) -> np.ndarray:
    """``function(n)`` for each entry of n_finite, evaluated once per distinct n."""
    distinct, inverse = np.unique(n_finite, return_inverse=True)
    return np.array([function(int(n)) for n in distinct]).reshape(len(distinct), -1)[inverse]


def log_parts(alive: np.ndarray, runs, floor: float = FLOOR, confidence: float = 0.95) -> dict:
    """The statistics of each column of ``alive`` (NaN = diverged or padding)
    but the geometric mean's interval; ``runs`` is the number of runs each
    column stands for (``n``)."""
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
        "n": np.broadcast_to(np.asarray(runs), n_finite.shape).copy(),
        "n_finite": n_finite,
        "n_diverged": runs - n_finite,
        "n_floored": n_floored,
        "mean": mean,
        "var": var,
        "log10_mean": log_mean,
        "log10_sd": log_sd,
        "geo_mean": to_linear(log_mean, floor),
        "median": to_linear(log_median, floor),
        "median_low": to_linear(median_low, floor),
        "median_high": to_linear(median_high, floor),
        "median_coverage": coverage,
    }


def geo_interval(log_mean, log_sd, n_finite, t_value, floor: float = FLOOR):
    """(low, high) = 10**(log10_mean -+ t * log10_sd / sqrt(n_finite)): positive by construction."""
    n_finite = np.asarray(n_finite)
    half = np.asarray(t_value) * np.asarray(log_sd) / np.sqrt(np.maximum(n_finite, 1))
    return to_linear(log_mean - half, floor), to_linear(log_mean + half, floor)
