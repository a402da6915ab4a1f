"""The power floors of optbench.reporting.power against scipy's own tests."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from optbench.reporting import comparison, power


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 8, 10])
def test_the_paired_floor_is_the_smallest_p_of_the_exact_wilcoxon_and_sign_tests(n):
    # Every sign pattern of n distinct magnitudes: the exact test's smallest p.
    magnitudes = np.arange(1.0, n + 1.0)
    smallest = min(
        stats.wilcoxon(magnitudes * np.array(signs), method="exact").pvalue
        for signs in itertools.product([-1.0, 1.0], repeat=n)
    )
    sign_test = stats.binomtest(n, n, 0.5).pvalue
    assert power.paired_floor(n) == pytest.approx(smallest, rel=1e-12)
    assert power.paired_floor(n) == pytest.approx(sign_test, rel=1e-12)
    assert power.paired_floor(n) == pytest.approx(min(1.0, 2.0 / 2.0**n))


@pytest.mark.parametrize("n", [3, 5, 7])
def test_the_floor_is_what_paired_test_reports_for_a_clean_sweep(n):
    # Distinct differences (Wilcoxon) and tied ones (sign test) alike.
    for a, b in [
        (np.arange(n) + 0.0, np.arange(n) + 1.5 * np.arange(1, n + 1)),
        (np.ones(n), np.full(n, 2.0)),
    ]:
        assert comparison.paired_test(a, b)["p_value"] == pytest.approx(power.paired_floor(n))


def test_beyond_fifty_pairs_the_floor_is_the_normal_approximation_scipy_uses():
    n = 60
    result = stats.wilcoxon(np.arange(1.0, n + 1.0), method="asymptotic")
    assert power.paired_floor(n) == pytest.approx(result.pvalue, rel=1e-9)


@pytest.mark.parametrize("m", [1, 3, 6, 10])
def test_holm_multiplies_the_smallest_p_by_the_number_of_tests(m):
    floor = power.paired_floor(5)
    others = np.linspace(0.3, 0.9, m - 1)
    adjusted = comparison.holm([floor, *others])
    assert power.holm_floor(floor, m) == pytest.approx(min(1.0, adjusted.min()))
    assert power.holm_floor(floor, m) == pytest.approx(min(1.0, m * 0.0625))


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("x", [0.5, 2.0, 7.3, 30.0])
def test_chi_square_tail_matches_scipy(dof, x):
    assert power.chi2_sf(x, dof) == pytest.approx(stats.chi2.sf(x, dof), rel=1e-10)


@pytest.mark.parametrize(("blocks", "k"), [(2, 3), (3, 4), (5, 3), (10, 6)])
def test_the_friedman_floor_is_scipys_p_when_every_block_ranks_alike(blocks, k):
    columns = [np.full(blocks, float(i)) + 0.01 * np.arange(blocks) for i in range(k)]
    expected = stats.friedmanchisquare(*columns).pvalue
    assert power.friedman_floor(blocks, k) == pytest.approx(expected, rel=1e-10)


def test_five_seeds_and_three_pairs_cannot_be_significant_and_seven_can():
    family = power.Family("pairwise", "p", "mse", n=5, n_tests=3)
    assert family.min_p == 0.0625 and family.min_p_adjusted == pytest.approx(0.1875)
    assert not family.can_be_significant
    # 3 * 2 / 2**6 = 0.094 is not below 0.05; 3 * 2 / 2**7 = 0.047 is.
    assert family.n_needed == 7
    assert "no difference can be significant at n = 5" in family.note()
    assert "7 seeds needed" in family.note()
    seven = power.Family("pairwise", "p", "mse", n=7, n_tests=3)
    assert seven.can_be_significant and seven.n_needed == 7


def test_the_level_is_strict_as_in_the_ranking():
    # 2 / 2**5 * 1 = 0.0625 at n = 5; a family whose floor equals alpha is not enough.
    family = power.Family("baseline", "p", "mse", n=5, n_tests=1, alpha=0.0625)
    assert not family.can_be_significant and family.n_needed == 6


def test_families_follow_the_grid():
    families = power.families_for(
        {("p", "mse"): 3, ("p", "l1"): 3}, 5, baseline=True, swept={("p", "mse"): 2}
    )
    kinds = [(f.family, f.problem, f.loss, f.n_tests) for f in families]
    assert kinds == [
        ("pairwise", "p", "mse", 3),
        ("baseline", "p", "mse", 1),
        ("tuning_gain", "p", "mse", 1),
        ("pairwise", "p", "l1", 3),
        ("baseline", "p", "l1", 1),
        ("friedman", "all", "all", 1),
    ]
    rows = power.table_rows(families)
    assert list(rows[0]) == power.COLUMNS
    assert math.isclose(rows[-1]["min_p"], stats.chi2.sf(4.0, 2))
    lines = power.plan_lines(families)
    assert lines[0].startswith("power: pairwise tests (leaderboard ranks; Holm over 3 pairs)")
    assert "p/mse, p/l1, 5 evaluation seeds" in lines[0] and "7 seeds needed" in lines[0]
