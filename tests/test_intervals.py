"""Coverage of the tables' intervals, by simulation on planted distributions.

Each check draws REPS studies of n seeds from a distribution whose true
median (or median per-seed speed-up) is known independently (scipy's normal
quantile, or numpy's median of a million draws), and counts the studies whose
95 % interval holds it. The intervals are exact and conservative: each
guarantees at least its stated coverage g (the binomial coverage of its order
statistics), so the count must reach g minus the Monte Carlo band
3 * sqrt(g (1 - g) / REPS) (a false failure has probability < 0.0014). At
n = 3 and 5 no 95 % interval exists: every bound must be NaN, "n too small".
"""

import functools
import math

import numpy as np
import pytest
from scipy import stats

from optbench.reporting import baseline, comparison, intervals
from optbench.reporting.logscale import median_ranks

REPS = 2000


def band(guaranteed: float, reps: int = REPS) -> float:
    return 3.0 * math.sqrt(guaranteed * (1.0 - guaranteed) / reps)


# Paired differences d = a - b of final log10 losses: (draw, true median).
def normal(rng, shape):
    return rng.normal(0.7, 1.0, shape)


def skewed(rng, shape):
    return np.exp(rng.normal(0.0, 1.0, shape)) - 1.0  # log-normal minus its median 1


def diverging(rng, shape):
    # b diverged on 20 % of the seeds: d = -inf there (a far better)
    d = rng.normal(0.7, 1.0, shape)
    return np.where(rng.random(shape) < 0.2, -np.inf, d)


DIFFERENCES = {
    "normal": (normal, 0.7),
    "log-normal": (skewed, 0.0),
    # P(d <= m) = 0.2 + 0.8 Phi(m - 0.7) = 1/2
    "20 % diverged": (diverging, 0.7 + stats.norm.ppf(0.3 / 0.8)),
}


@pytest.mark.parametrize("name", DIFFERENCES)
@pytest.mark.parametrize("n", [3, 5, 6, 10, 20])
def test_the_median_difference_interval_holds_its_coverage(name, n):
    draw, truth = DIFFERENCES[name]
    rng = np.random.default_rng(n)
    samples = draw(rng, (REPS, n))
    low, high, coverage = intervals.median_bounds(samples)
    # the table's function gives the same interval, study by study
    for d in samples[:3]:
        row = comparison.paired_test(d, np.zeros(n))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            intervals.median_interval(d)[:2], nan_ok=True
        )
    if n < 6:
        assert np.isnan(low).all() and np.isnan(high).all() and math.isnan(coverage)
        assert intervals.median_interval(samples[0])[2].startswith("n too small")
        return
    guaranteed = median_ranks(n, 0.95)[1]
    assert coverage == guaranteed >= 0.95
    covered = np.mean((low <= truth) & (truth <= high))
    assert covered >= guaranteed - band(guaranteed), (name, n, covered)


# Steps to a target, paired by seed: a seed's difficulty (z) is shared by both
# optimizers; the baseline's median is 100 steps, the optimizer's 50. With a
# budget, a run past it never reached the target (NaN in the tables).
def steps(rng, shape, budget):
    seed_difficulty = rng.normal(size=shape)
    baseline_steps = 100 * np.exp(0.35 * seed_difficulty + 0.35 * rng.normal(size=shape))
    optimizer_steps = 50 * np.exp(0.35 * seed_difficulty + 0.35 * rng.normal(size=shape))
    latent = baseline_steps / optimizer_steps
    baseline_steps = np.where(baseline_steps > budget, np.nan, baseline_steps)
    optimizer_steps = np.where(optimizer_steps > budget, np.nan, optimizer_steps)
    return baseline_steps, optimizer_steps, latent


@functools.cache
def true_speedup(budget: float) -> float:
    """Median per-seed speed-up: +inf where only the baseline missed the budget, 0
    where only the optimizer did, and where both did the ratio they would have had
    (the interval must cover it whatever that ratio is)."""
    b, a, latent = steps(np.random.default_rng(0), 1_000_000, budget)
    ratio = np.where(np.isnan(b), np.where(np.isnan(a), latent, np.inf), b / a)
    return float(np.median(np.where(np.isnan(a) & ~np.isnan(b), 0.0, ratio)))


BUDGETS = {
    "never censored": math.inf,
    # 25 % of the baseline's runs and 2 % of the optimizer's miss it, 1.4 % both
    "censored": 140.0,
    # 58 % of the baseline's runs miss it (its median is censored), 12 % of the
    # optimizer's, 10 % both
    "mostly censored": 90.0,
}


@pytest.mark.parametrize("name", BUDGETS)
@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_speedup_interval_holds_its_coverage(name, n):
    budget = BUDGETS[name]
    truth = true_speedup(budget)
    rng = np.random.default_rng(100 + n)
    reps = 1000
    b, a, _ = steps(rng, (reps, n), budget)
    results = [baseline.speedup(b[i], a[i]) for i in range(reps)]
    low = np.array([r[1] for r in results])
    high = np.array([r[2] for r in results])
    if n < 6:
        assert np.isnan(low).all() and np.isnan(high).all()
        # (after "not estimable: ...; " where the unknown seeds decide the median)
        assert all("n too small: no exact 95 % interval" in r[3] for r in results)
        return
    guaranteed = median_ranks(n, 0.95)[1]
    covered = np.mean((low <= truth) & (truth <= high))
    assert covered >= guaranteed - band(guaranteed, reps), (name, n, covered, truth)


@pytest.mark.parametrize("name", BUDGETS)
def test_the_speedup_interval_holds_its_coverage_at_twenty_seeds(name):
    budget = BUDGETS[name]
    truth = true_speedup(budget)
    b, a, _ = steps(np.random.default_rng(20), (REPS, 20), budget)
    b, a = np.nan_to_num(b, nan=np.inf), np.nan_to_num(a, nan=np.inf)
    _, _, low, high, _ = intervals.ratio_bounds(b, a)
    guaranteed = median_ranks(20, 0.95)[1]
    covered = np.mean((low <= truth) & (truth <= high))
    assert covered >= guaranteed - band(guaranteed), (name, covered, truth)


def test_nan_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="pass \\+inf for a run that never reached"):
        intervals.median_interval([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="values >= 0"):
        intervals.speedup_interval([1.0, -2.0], [1.0, 1.0])
