"""Log-space summaries checked against numpy/scipy and hand-computed order statistics."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optbench.reporting import statistics
from optbench.reporting.statistics import FLOOR, log_describe


def test_geometric_mean_and_t_interval_are_those_of_the_log10_values():
    rng = np.random.default_rng(3)
    losses = 10.0 ** rng.uniform(-15, -1, size=(12, 5))
    described = log_describe(losses)
    for step in range(5):
        logs = np.log10(losses[:, step])
        low, high = stats.t.interval(0.95, 11, loc=logs.mean(), scale=stats.sem(logs))
        assert described["log10_mean"][step] == pytest.approx(logs.mean(), rel=1e-12)
        assert described["log10_sd"][step] == pytest.approx(logs.std(ddof=1), rel=1e-12)
        assert described["geo_mean"][step] == pytest.approx(10 ** logs.mean(), rel=1e-9)
        assert described["geo_low"][step] == pytest.approx(10**low, rel=1e-9)
        assert described["geo_high"][step] == pytest.approx(10**high, rel=1e-9)
        # the arithmetic statistics stay in the table, computed on the raw values
        assert described["mean"][step] == pytest.approx(losses[:, step].mean(), rel=1e-12)
        assert described["var"][step] == pytest.approx(losses[:, step].var(ddof=1), rel=1e-12)


def test_bands_stay_positive_where_the_arithmetic_t_interval_goes_negative():
    # rmsprop-like final losses: seven orders of magnitude, a zero and a subnormal
    finals = np.array([1.6e-14, 3e-15, 8e-8, 2e-12, 5e-10, 0.0, 4e-14, 7e-9, 1e-15, 1e-320])
    arithmetic_low, _ = stats.t.interval(
        0.95, finals.size - 1, loc=finals.mean(), scale=stats.sem(finals)
    )
    assert arithmetic_low < 0  # the premise: a t-interval on raw losses crosses zero
    described = log_describe(finals)
    for key in ("geo_mean", "geo_low", "geo_high", "median", "median_low", "median_high"):
        assert described[key][0] >= FLOOR > 0, key
    assert described["n_floored"][0] == 2  # the zero and the subnormal 1e-320
    # those two were raised to the floor, nothing else changed
    floored = np.log10(np.where(finals < FLOOR, FLOOR, finals))
    assert described["log10_mean"][0] == pytest.approx(floored.mean(), rel=1e-12)


def test_interval_ends_that_underflow_are_clipped_to_the_floor_not_zero():
    finals = np.array([FLOOR, FLOOR, 1.0])  # log10 mean - half width is far below -308
    described = log_describe(finals)
    assert described["geo_low"][0] == FLOOR
    assert np.isfinite(described["geo_high"][0]) and described["geo_high"][0] > 1.0


@pytest.mark.parametrize("n", [5, 6, 7, 10, 20, 21, 50])
def test_median_interval_matches_scipy_quantile_test(n):
    rng = np.random.default_rng(n)
    values = 10.0 ** rng.uniform(-12, 0, size=n)
    described = log_describe(values)
    reference = stats.quantile_test(values, q=np.median(values), p=0.5).confidence_interval(0.95)
    if n < 6:  # no pair of order statistics reaches 95 %: no band, rather than a false one
        assert math.isnan(described["median_low"][0]) and math.isnan(reference.low)
        assert math.isnan(described["median_coverage"][0])
    else:
        assert described["median_low"][0] == pytest.approx(reference.low, rel=1e-12)
        assert described["median_high"][0] == pytest.approx(reference.high, rel=1e-12)
        assert described["median_coverage"][0] >= 0.95


def test_median_ranks_by_hand():
    # n = 10: P(B <= 1) = 11/1024 <= 0.025 < P(B <= 2) = 56/1024, so [x_(2), x_(9)]
    assert statistics.median_ranks(10) == (2, 1 - 22 / 1024)
    # n = 6: P(B <= 0) = 1/64, so [min, max] with coverage 62/64
    assert statistics.median_ranks(6) == (1, 1 - 2 / 64)
    assert statistics.median_ranks(5)[0] == 0
    values = 10.0 ** -np.array([3, 9, 1, 7, 5, 2, 8, 4, 10, 6])
    described = log_describe(values)
    assert described["median_low"][0] == pytest.approx(1e-9, rel=1e-12)  # 2nd smallest
    assert described["median_high"][0] == pytest.approx(1e-2, rel=1e-12)  # 2nd largest


def test_median_ranks_of_a_hundred_thousand_seeds_are_scipys_and_quick():
    """A 125,000-seed cell (10^6 runs over 8 cells) once took hours here: the
    binomial sums are exact and incremental now. The rank is the largest l with
    P(B <= l - 1) <= 0.025 for B ~ Binomial(n, 1/2), as scipy computes it."""
    import time

    n = 125_000
    started = time.process_time()
    lower, coverage = statistics.median_ranks.__wrapped__(n)
    assert time.process_time() - started < 20
    assert stats.binom.cdf(lower - 1, n, 0.5) <= 0.025 < stats.binom.cdf(lower, n, 0.5)
    assert coverage == pytest.approx(1 - 2 * stats.binom.cdf(lower - 1, n, 0.5), abs=1e-12)
    for small in (6, 10, 37, 500):  # and the same ranks as scipy's where it is quick
        low, _ = statistics.median_ranks(small)
        assert stats.binom.cdf(low - 1, small, 0.5) <= 0.025 < stats.binom.cdf(low, small, 0.5)


def test_median_is_taken_in_log_space():
    # even n: the geometric mean of the two middle values, not their average
    described = log_describe(np.array([1e-10, 1e-6, 1e-2, 1.0]))
    assert described["median"][0] == pytest.approx(1e-4, rel=1e-12)


def test_a_run_is_left_out_from_its_first_non_finite_step_on():
    losses = np.array(
        [
            [1.0, 0.5, 0.25, 0.125],
            [1.0, np.inf, 0.5, 0.25],  # diverged at step 1, later values do not count
            [1.0, 0.1, np.nan, 0.01],
        ]
    )
    described = log_describe(losses)
    assert list(described["n"]) == [3, 3, 3, 3]
    assert list(described["n_diverged"]) == [0, 1, 2, 2]
    assert list(described["n_finite"]) == [3, 2, 1, 1]
    assert described["geo_mean"][1] == pytest.approx(math.sqrt(0.5 * 0.1), rel=1e-12)
    assert described["geo_mean"][3] == pytest.approx(0.125, rel=1e-12)
    assert math.isnan(described["geo_low"][3])  # one run: no interval


def test_negative_losses_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="negative.*Shift the objective"):
        log_describe(np.array([0.5, -0.1, 0.2]))


def test_log10_or_inf_marks_diverged_runs_worst():
    values = statistics.log10_or_inf([1e-3, np.inf, np.nan, 0.0])
    assert values[0] == pytest.approx(-3)
    assert values[1] == values[2] == np.inf
    assert values[3] == math.log10(FLOOR)


def test_log_summary_table_groups_runs():
    frame = pd.DataFrame(
        {
            "optimizer": ["a"] * 3 + ["b"] * 2,
            "final_loss": [1e-2, 1e-4, 1e-6, 1.0, np.inf],
        }
    )
    table = statistics.log_summary_table(frame, ["optimizer"])
    assert list(table["optimizer"]) == ["a", "b"]
    assert list(table.columns) == ["optimizer", *statistics.SUMMARY_COLUMNS]
    a, b = table.iloc[0], table.iloc[1]
    assert a["geo_mean"] == pytest.approx(1e-4) and a["median"] == pytest.approx(1e-4)
    assert b["n"] == 2 and b["n_diverged"] == 1 and b["geo_mean"] == pytest.approx(1.0)


def test_log_summary_table_equals_log_describe_per_group():
    rng = np.random.default_rng(4)
    names = rng.choice(["a", "b", "c", "d"], size=60, p=[0.5, 0.3, 0.15, 0.05])
    values = 10.0 ** rng.uniform(-15, 0, size=60)
    values[rng.random(60) < 0.1] = np.inf
    frame = pd.DataFrame({"optimizer": names, "final_loss": values})
    table = statistics.log_summary_table(frame, ["optimizer"]).set_index("optimizer")
    assert list(table.index) == list(dict.fromkeys(names))
    for name in table.index:
        described = log_describe(values[names == name])
        assert table.loc[name, "ci_method"] == described.pop("ci_method")[0]
        expected = pd.Series({key: column[0] for key, column in described.items()}, dtype=float)
        pd.testing.assert_series_equal(
            table.loc[name].drop("ci_method").astype(float), expected, check_names=False, rtol=1e-12
        )


def test_missing_columns_are_named():
    with pytest.raises(
        ValueError,
        match=r"^log_summary_table needs the column\(s\) final_loss; the table has optimizer\. "
        "Pass the per-run metrics table.$",
    ):
        statistics.log_summary_table(pd.DataFrame({"optimizer": ["a"]}), ["optimizer"])


def test_an_empty_table_gives_the_columns_and_no_rows():
    frame = pd.DataFrame({"loss": [], "optimizer": [], "final_loss": []})
    table = statistics.log_summary_table(frame, ["loss", "optimizer"])
    assert list(table.columns) == ["loss", "optimizer", *statistics.SUMMARY_COLUMNS]
    assert len(table) == 0


def test_a_missing_group_key_is_a_group_of_its_own():
    # e.g. runs of an entry without a variant: kept, not dropped or merged into another group
    frame = pd.DataFrame(
        {"variant": ["lr1", None, "lr1", None], "final_loss": [1e-2, 1e-4, 1e-4, 1e-6]}
    )
    table = statistics.log_summary_table(frame, ["variant"])
    assert list(table["n"]) == [2, 2]
    assert table.loc[0, "variant"] == "lr1" and pd.isna(table.loc[1, "variant"])
    assert table.loc[0, "geo_mean"] == pytest.approx(1e-3)
    assert table.loc[1, "geo_mean"] == pytest.approx(1e-5)


def test_two_runs_have_a_variance_and_a_t_interval_with_one_degree_of_freedom():
    values = np.array([1e-2, 4e-2])
    described = log_describe(values)
    logs = np.log10(values)
    half = stats.t.ppf(0.975, 1) * np.std(logs, ddof=1) / math.sqrt(2)
    assert described["var"][0] == pytest.approx(np.var(values, ddof=1), rel=1e-12)
    assert described["log10_sd"][0] == pytest.approx(np.std(logs, ddof=1), rel=1e-12)
    assert described["geo_low"][0] == pytest.approx(10 ** (logs.mean() - half), rel=1e-9)
    assert described["geo_high"][0] == pytest.approx(10 ** (logs.mean() + half), rel=1e-9)


def test_a_custom_floor_and_confidence_are_used():
    # below the floor 1e-3 a loss counts as 1e-3; a loss equal to the floor is not floored
    described = log_describe(np.array([1e-5, 1e-3, 1e-1]), floor=1e-3)
    assert described["n_floored"][0] == 1
    assert described["log10_mean"][0] == pytest.approx((-3 - 3 - 1) / 3)
    assert statistics.log10_or_inf([1e-5, np.inf], floor=1e-3).tolist() == [-3.0, np.inf]
    # median interval at 80 %: ranks from the binomial directly (l - 1 = last k with cdf <= 0.1)
    values = 10.0 ** -np.arange(1.0, 13.0)
    lower = int(np.flatnonzero(stats.binom.cdf(np.arange(13), 12, 0.5) <= 0.1)[-1]) + 1
    described = log_describe(values, confidence=0.8)
    ordered = np.sort(values)
    assert described["median_low"][0] == pytest.approx(ordered[lower - 1], rel=1e-12)
    assert described["median_high"][0] == pytest.approx(ordered[12 - lower], rel=1e-12)


def test_input_errors_say_what_is_wrong_and_the_fix():
    with pytest.raises(
        ValueError, match="^expected 1-D .runs. or 2-D .runs x steps. losses, got 3-D$"
    ):
        statistics.mask_diverged(np.zeros((2, 2, 2)))
    with pytest.raises(
        ValueError,
        match=r"^1 loss value\(s\) are negative \(smallest -0\.1\); log-space statistics need "
        r"losses >= 0\. Shift the objective by its optimum \(report loss - reference value\) "
        r"or summarise it on the linear scale\.$",
    ):
        log_describe(np.array([0.5, -0.1]))
    with pytest.raises(
        ValueError, match="needs the column.s. seed, final_loss; the table has optimizer, role\\."
    ):
        statistics.require_columns(
            pd.DataFrame({"optimizer": [], "role": []}), ["seed", "final_loss"], "x"
        )


def test_every_interval_states_its_method():
    # 5 finite runs: no 95 % order-statistic interval (needs 6); 10: x(2), x(9),
    # coverage 1 - 2 * 11/1024 (Binomial(10, 1/2) <= 1).
    five = log_describe(np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0]))
    assert (
        five["ci_method"][0] == "geo: t on log10 (4 df; if log-normal); median: n too small (< 6)"
    )
    assert np.isnan(five["median_low"][0]) and np.isfinite(five["geo_low"][0])
    ten = log_describe(10.0 ** -np.arange(10.0))
    assert ten["ci_method"][0] == (
        "geo: t on log10 (9 df; if log-normal); median: order statistics x(2), x(9), "
        f"exact >= {100 * (1 - 2 * 11 / 1024):.1f} %"
    )
    one = log_describe(np.array([1.0, np.inf]))  # one finite run: no interval at all
    assert one["ci_method"][0] == "geo: n too small; median: n too small (< 6)"
