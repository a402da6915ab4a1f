"""Confidence intervals that keep their coverage at a handful of seeds, with censored values.

A study has 3-20 seeds; a percentile bootstrap over so few values covers far
less often than it claims (from 3 paired seeds it read "1.67x faster [1.25,
3.5]"; on planted log-normal step counts such a "95 %" interval misses the true
speed-up in about one study of four), and a bootstrap of a ratio of censored
medians has resamples with no defined ratio. The intervals here are exact and
distribution-free: they hold their level for any distribution, at any n where
they exist, with no random numbers.

Median (``median_interval``): [x_(l), x_(n+1-l)], the l-th smallest and the
l-th largest value, l from the Binomial(n, 1/2) count of values below the
median (``logscale.median_ranks``): coverage >= the level asked, for any
distribution, ties and infinite values included (+inf: a diverged run, or a run
that never reached a target). Below ``MIN_N_MEDIAN`` (6) values no pair of
order statistics reaches 95 %: the bounds are NaN and the method says "n too
small".

Speed-up (``speedup_interval``): the median over the seeds of the per-seed
ratio baseline steps / optimizer steps to the target (paired by seed: the two
runs of a seed share its data and initial weights; for an even count the
geometric mean of the two middle ratios, as speed-ups are read on a log scale,
undefined for 0 and +inf). A run that never reached
the target counts as +inf steps, more than any step count: a seed where only
the baseline missed it has ratio +inf, one where only the optimizer did 0
(two runs at step 0 tie: 1). Where neither reached it the ratio is unknown,
anything from 0 to +inf. Nothing is dropped or resampled: the interval takes
the unknown ratios as 0 for its low end and +inf for its high end, so it holds
the order-statistic interval of every way of filling them in, and covers the
median per-seed speed-up with probability >= its level whatever they are.
The point is the median if the unknown ratios cannot move it, else NaN with
the method "not estimable: neither reached the target on k of n seeds, so the
median lies anywhere in [a, b]" (as when both medians are censored). The same
order-statistic interval as the median's, so it too needs ``MIN_N_MEDIAN``
pairs.

Every result carries its method as text, for the tables' ``*ci_method``
columns: how the interval was made and its guaranteed coverage, or why there
is none.
"""

from __future__ import annotations

import functools

import numpy as np

from optbench.reporting.logscale import median_ranks

CONFIDENCE = 0.95


@functools.lru_cache(maxsize=64)
def minimum_n(confidence: float = CONFIDENCE) -> int:
    """The fewest values whose order-statistic interval of the median reaches ``confidence``."""
    n = 1
    while median_ranks(n, confidence)[0] == 0:
        n += 1
    return n


MIN_N_MEDIAN = minimum_n(CONFIDENCE)  # 6


def _percent(value: float) -> str:
    """95 % for 0.95, 96.9 % for 0.96875: one decimal where it says something."""
    return f"{f'{100.0 * value:.1f}'.removesuffix('.0')} %"


def too_small_text(n: int, needed: int, confidence: float = CONFIDENCE) -> str:
    return (
        f"n too small: no exact {_percent(confidence)} interval from {n} value(s)"
        f" (needs >= {needed})"
    )


def _sorted(values) -> np.ndarray:
    """Values sorted along the last axis; NaN refused (a missing value is not a censored one)."""
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError(
            "interval values contain NaN; pass +inf for a run that never reached its "
            "target or diverged, and leave out the seeds that have no value"
        )
    return np.sort(values, axis=-1)


def median_bounds(values, confidence: float = CONFIDENCE) -> tuple[np.ndarray, np.ndarray, float]:
    """(low, high, coverage) of the median's order-statistic interval along the last axis.

    Vectorised over leading axes (e.g. simulated studies x values). NaN bounds
    and NaN coverage when the values are too few for ``confidence``.
    """
    ordered = _sorted(values)
    n = ordered.shape[-1]
    lower, coverage = median_ranks(n, confidence)
    if lower == 0:
        shape = ordered.shape[:-1]
        return np.full(shape, np.nan), np.full(shape, np.nan), float("nan")
    return ordered[..., lower - 1], ordered[..., n - lower], coverage


def median_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, str]:
    """(low, high, method) of the median of 1-D ``values`` (module doc)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"median_interval takes 1-D values, got {values.ndim}-D")
    low, high, coverage = median_bounds(values, confidence)
    if np.isnan(coverage):
        needed = minimum_n(confidence)
        return float("nan"), float("nan"), too_small_text(values.size, needed, confidence)
    lower, _ = median_ranks(values.size, confidence)
    method = (
        f"exact order statistics x({lower}), x({values.size + 1 - lower}) of {values.size}:"
        f" coverage >= {_percent(coverage)}"
    )
    return float(low), float(high), method


def _ratio_median(ratios: np.ndarray) -> np.ndarray:
    """Median of ratios along the last axis, on the log scale a speed-up is read on: for
    an even count the geometric mean of the two middle ones, NaN for 0 and +inf."""
    ordered = np.sort(ratios, axis=-1)
    n = ordered.shape[-1]
    with np.errstate(invalid="ignore"):  # 0 * inf: undefined
        return np.sqrt(ordered[..., (n - 1) // 2] * ordered[..., n // 2])


def ratio_bounds(numerator, denominator, confidence: float = CONFIDENCE):
    """(median_low, median_high, low, high, n_unknown) arrays of the per-pair ratios.

    Along the last axis, vectorised over leading axes (simulated studies x
    pairs): the sample median of the ratios with the unknown ones at 0 and at
    +inf (equal where they cannot move it), the interval's bounds (NaN where
    the pairs are too few) and the count of unknown ratios (module doc).
    """
    top, bottom = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if top.shape != bottom.shape:
        raise ValueError(f"the two samples must have one shape: {top.shape}, {bottom.shape}")
    _sorted(top), _sorted(bottom)  # refuses NaN, naming the fix
    if (top < 0).any() or (bottom < 0).any():
        raise ValueError("a speed-up needs values >= 0 (steps or seconds to a target)")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = top / bottom  # inf/finite = inf, finite/inf = 0, finite/0 = inf
    ratio = np.where((top == 0) & (bottom == 0), 1.0, ratio)  # both at step 0: a tie
    unknown = np.isnan(ratio)  # inf/inf: neither reached the target
    smallest = np.where(unknown, 0.0, ratio)  # what each unknown ratio is at least ...
    largest = np.where(unknown, np.inf, ratio)  # ... and at most
    low, _, _ = median_bounds(smallest, confidence)
    _, high, _ = median_bounds(largest, confidence)
    return _ratio_median(smallest), _ratio_median(largest), low, high, unknown.sum(axis=-1)


def speedup_interval(numerator, denominator, confidence: float = CONFIDENCE):
    """(point, low, high, method) of the median per-seed ratio of two seed-aligned 1-D samples."""
    top, bottom = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if top.ndim != 1 or top.shape != bottom.shape:
        raise ValueError(
            f"speedup_interval takes two 1-D samples of one length: {top.shape}, {bottom.shape}"
        )
    n = top.size
    if n == 0:
        return float("nan"), float("nan"), float("nan"), "no pairs"
    at_least, at_most, low, high, unknown = (
        float(v) for v in ratio_bounds(top, bottom, confidence)
    )
    lower, coverage = median_ranks(n, confidence)
    if lower == 0:
        method = too_small_text(n, minimum_n(confidence), confidence)
    else:
        method = (
            f"exact order statistics x({lower}), x({n + 1 - lower}) of {n} per-seed ratios:"
            f" coverage >= {_percent(coverage)}"
        )
    if unknown:
        method += f"; neither reached the target on {unknown:.0f} of {n} seeds (ratio 0 to inf)"
    if at_least == at_most:
        return at_least, low, high, method
    interval = method.split("; ")[0]
    if not unknown:  # only possible with a 0 and an inf in the middle
        why = "the two middle per-seed ratios are 0 and inf (each missed where the other reached)"
    elif np.isnan(at_least) or np.isnan(at_most):
        why = f"neither reached the target on {unknown:.0f} of {n} seeds, which decide the median"
    else:
        why = (
            f"neither reached the target on {unknown:.0f} of {n} seeds, so the median lies"
            f" anywhere in [{at_least:.3g}, {at_most:.3g}]"
        )
    return float("nan"), low, high, f"not estimable: {why}; {interval}"
