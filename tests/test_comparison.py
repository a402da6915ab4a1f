"""Paired tests, Holm, rankings, win probabilities and Friedman on hand-made tables."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optbench.reporting import comparison


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04)
    assert comparison.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = comparison.holm([0.01, np.nan, 0.04])  # NaN is not a test: m = 2
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert comparison.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert comparison.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # 2 * 0.6 capped at 1


def test_wilcoxon_hand_case():
    b = np.zeros(5)
    a = b + np.array([1.0, -2.0, 3.0, 4.0, 5.0])
    result = comparison.paired_test(a, b)
    # ranks 1..5; a wins only the pair of rank 2: R_a = 2, R_b = 13.
    # Exact two-sided p: 3 of the 32 sign patterns have R <= 2, 3 have R >= 13.
    assert result["test"] == "wilcoxon exact"
    assert result["p_value"] == pytest.approx(6 / 32)
    assert result["statistic"] == 2
    assert result["rank_biserial"] == pytest.approx((2 - 13) / 15)
    assert result["p_a_better"] == pytest.approx(1 / 5)
    assert result["better"] == "b" and result["median_diff"] == 3.0


@pytest.mark.parametrize("n", [20, 60])
def test_wilcoxon_agrees_with_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=n), rng.normal(loc=0.4, size=n)
    result = comparison.paired_test(a, b)
    assert result["test"] == ("wilcoxon exact" if n <= 50 else "wilcoxon normal")
    assert result["p_value"] == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-12)
    assert result["better"] == "a"


def test_a_single_diverged_run_ranks_as_the_largest_difference():
    d = np.array([-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, np.inf])  # b diverged once
    result = comparison.paired_test(d, np.zeros(8))
    assert result["test"] == "wilcoxon exact"
    # the diverged pair takes rank 8: R_a = 1 + ... + 7 = 28, R_b = 8
    assert result["rank_biserial"] == pytest.approx((28 - 8) / 36)
    reference = stats.wilcoxon(np.where(np.isinf(d), 100.0, d), method="exact").pvalue
    assert result["p_value"] == pytest.approx(reference, rel=1e-12)


def test_sign_test_when_divergence_ties_the_magnitudes():
    a = np.full(8, -5.0)
    b = np.array([np.inf] * 5 + [-4.5, -6.0, -7.0])  # b diverged on five seeds
    result = comparison.paired_test(a, b)
    assert result["test"] == "sign"
    assert result["p_value"] == pytest.approx(2 * (1 + 8 + 28) / 256)  # binomial, 6 of 8
    assert result["p_a_better"] == pytest.approx(6 / 8) and result["better"] == "a"
    assert result["median_diff"] == -np.inf
    # interval ends are order statistics: an infinite end stays infinite, never NaN
    assert result["ci_low"] == -np.inf and np.isfinite(result["ci_high"])


def test_two_diverged_runs_tie():
    result = comparison.paired_test([np.inf, -3.0, -4.0], [np.inf, -2.0, -1.0])
    assert result["n_pairs"] == 3 and result["n_ties"] == 1
    assert result["p_a_better"] == pytest.approx((2 + 0.5) / 3)
    all_tied = comparison.paired_test([1.0, np.inf], [1.0, np.inf])
    assert all_tied["p_value"] == 1.0 and all_tied["better"] == ""


def test_the_median_difference_interval_is_exact_order_statistics():
    # n = 10: P(Binomial(10, 1/2) <= 1) = 11/1024 <= 0.025 < P(<= 2) = 56/1024, so the
    # interval is [d_(2), d_(9)] with coverage 1 - 2 * 11/1024 for any distribution.
    d = np.array([0.3, -1.0, 2.5, 0.1, -0.4, 1.7, 0.9, np.inf, -2.0, 0.6])
    result = comparison.paired_test(d, np.zeros(10))
    ordered = sorted(d)
    assert (result["ci_low"], result["ci_high"]) == (ordered[1], ordered[8])
    assert result["ci_method"] == (
        f"exact order statistics x(2), x(9) of 10: coverage >= {100 * (1 - 2 * 11 / 1024):.1f} %"
    )
    # n = 8: P(B <= 0) = 1/256 <= 0.025 < P(B <= 1) = 9/256: [min, max]
    result = comparison.paired_test(d[:8], np.zeros(8))
    assert (result["ci_low"], result["ci_high"]) == (min(d[:8]), max(d[:8]))


@pytest.mark.parametrize("n", [1, 3, 5])
def test_no_median_difference_interval_below_six_pairs(n):
    # Even [min, max] covers the median with probability 1 - 2 / 2**n < 95 % at n <= 5.
    result = comparison.paired_test(np.arange(1.0, n + 1), np.zeros(n))
    assert math.isnan(result["ci_low"]) and math.isnan(result["ci_high"])
    assert result["ci_method"].startswith("n too small")
    assert "needs >= 6" in result["ci_method"]
    assert result["median_diff"] == np.median(np.arange(1.0, n + 1))  # the point stays


def block(problem, loss, table):
    """table: optimizer -> log10 values per seed -> long rows of final losses."""
    rows = []
    for optimizer, values in table.items():
        for seed, value in enumerate(values):
            rows.append((problem, loss, optimizer, seed, 10.0**value))
    return pd.DataFrame(rows, columns=comparison.RUN_COLUMNS)


def separated_blocks():
    noise = np.array([1.0, -1.1, 2.0, -2.1, 3.0, -3.1, 4.0, -4.1, 5.0, -5.1]) / 10
    first = block("p", "mse", {"b": -5 + noise, "a": -10 + noise, "c": -5 - noise})
    second = block("p", "l1", {"a": -2 + noise, "b": -2 - noise, "c": -1 + noise})
    return pd.concat([first, second], ignore_index=True)


def test_ranking_ties_where_the_corrected_tests_cannot_separate():
    runs = separated_blocks()
    pairs = comparison.pairwise_table(runs)
    mse = pairs[pairs["loss"] == "mse"].set_index(["a", "b"])
    # a wins all ten seeds against b and c: exact p = 2/1024, Holm over 3 pairs
    assert mse.loc[("b", "a"), "p_value"] == pytest.approx(2 / 1024)
    assert mse.loc[("b", "a"), "p_holm"] == pytest.approx(3 * 2 / 1024)
    assert mse.loc[("a", "c"), "p_holm"] == pytest.approx(3 * 2 / 1024)  # max(2 * p, 3 * p)
    assert mse.loc[("b", "c"), "p_holm"] > 0.05
    ranking = comparison.ranking_table(runs, pairs)
    got = {(r.loss, r.optimizer): (r.rank, r.beaten_by) for r in ranking.itertuples()}
    assert got == {
        ("mse", "a"): (1, ""),
        ("mse", "b"): (2, "a"),
        ("mse", "c"): (2, "a"),
        ("l1", "a"): (1, ""),
        ("l1", "b"): (1, ""),
        ("l1", "c"): (3, "a,b"),
    }
    assert ranking["loss"].tolist()[:3] == ["mse"] * 3 and ranking["optimizer"].iloc[0] == "a"
    # without a pairwise table it runs the same tests itself
    again = comparison.ranking_table(runs)
    assert {(r.loss, r.optimizer): (r.rank, r.beaten_by) for r in again.itertuples()} == got
    assert list(ranking.columns) == [
        "problem",
        "loss",
        "optimizer",
        "n",
        "n_diverged",
        "median_log10",
        "rank",
        "beaten_by",
        "point_rank",
        "note",
    ]
    assert list(ranking.index) == list(range(6)) and set(ranking["problem"]) == {"p"}
    mse = ranking[ranking["loss"] == "mse"].set_index("optimizer")
    assert list(mse["n"]) == [10, 10, 10] and list(mse["n_diverged"]) == [0, 0, 0]
    # medians of the log10 values: -10 + median(noise) (a), -5 - median(noise) (c)
    noise = np.array([1.0, -1.1, 2.0, -2.1, 3.0, -3.1, 4.0, -4.1, 5.0, -5.1]) / 10
    assert mse.loc["a", "median_log10"] == pytest.approx(-10 + np.median(noise))
    assert mse.loc["c", "median_log10"] == pytest.approx(-5 - np.median(noise))


def test_win_probabilities_count_ties_half_and_divergence_as_a_loss():
    runs = pd.concat(
        [
            block("p", "mse", {"a": [1, 2, 3, 4], "b": [2, 2, 1, np.inf]}),
            block("q", "mse", {"a": [1, 1, 1, 1], "b": [0, 0, 0, 2]}),
        ]
    )
    probabilities = comparison.win_probabilities(runs)
    by_pair = probabilities.set_index(["problem", "row", "column"])["p_win"]
    assert by_pair[("p", "a", "b")] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert by_pair[("p", "b", "a")] == pytest.approx(1 - 0.625)
    assert by_pair[("q", "a", "b")] == pytest.approx(0.25)
    matrix = comparison.win_matrix(probabilities)
    assert matrix.loc["a", "b"] == pytest.approx((0.625 + 0.25) / 2)
    assert math.isnan(matrix.loc["a", "a"])


def test_friedman_against_the_hand_formula():
    # per-block ranks (a, b, c): (1,2,3), (1,3,2), (2,1,3), (1,2,3); rank sums 5, 8, 11
    medians = [(-9, -6, -3), (-9, -1, -4), (-5, -8, -2), (-7, -6, -5)]
    runs = pd.concat(
        [
            # three seeds per optimizer; the middle one is the median
            block(f"p{i}", "mse", {o: [m - 1, m, m + 0.5] for o, m in zip("abc", row, strict=True)})
            for i, row in enumerate(medians)
        ]
    )
    average, test = comparison.friedman(runs)
    assert average.set_index("optimizer")["average_rank"].to_dict() == {
        "a": 1.25,
        "b": 2.0,
        "c": 2.75,
    }
    statistic = 12 / (4 * 3 * 4) * (5**2 + 8**2 + 11**2) - 3 * 4 * 4
    assert test["statistic"] == pytest.approx(statistic) == pytest.approx(4.5)
    assert test["p_value"] == pytest.approx(math.exp(-4.5 / 2))  # chi-square, 2 dof
    assert test["n_blocks"] == 4 and test["note"] == ""


def test_friedman_needs_three_optimizers_and_ranks_divergence_last():
    two = block("p", "mse", {"a": [1.0], "b": [2.0]})
    average, test = comparison.friedman(two)
    assert math.isnan(test["p_value"]) and ">= 3 optimizers" in test["note"]
    assert average["average_rank"].tolist() == [1.0, 2.0]
    diverged = pd.concat(
        [block(f"p{i}", "mse", {"a": [np.inf], "b": [5.0], "c": [9.0]}) for i in range(3)]
    )
    average, _ = comparison.friedman(diverged)
    assert average["average_rank"].tolist() == [3.0, 1.0, 2.0]
    # two diverged optimizers tie for last place: ranks 2.5 each
    tied = pd.concat(
        [block(f"p{i}", "mse", {"a": [np.inf], "b": [np.inf], "c": [9.0]}) for i in range(3)]
    )
    average, test = comparison.friedman(tied)
    assert average["average_rank"].tolist() == [2.5, 2.5, 1.0]
    # every block ranks alike: the tie-corrected statistic is n (k - 1) = 6
    assert test["statistic"] == pytest.approx(6.0)


def test_duplicate_runs_are_refused():
    runs = block("p", "mse", {"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="tuned_evaluation_runs"):
        comparison.pairwise_table(pd.concat([runs, runs]))


def hand_pairs(*rows):
    """Pairwise rows (a, b, better: "a", "b" or "", p_holm) of one block."""
    return pd.DataFrame(
        [("p", "mse", a, b, better, p) for a, b, better, p in rows],
        columns=["problem", "loss", "a", "b", "better", "p_holm"],
    )


def test_ranking_counts_only_wins_below_alpha_with_a_winner():
    runs = block("p", "mse", {"a": [1.0, 2.0], "b": [3.0, math.inf], "c": [2.0, 2.0]})
    pairs = hand_pairs(
        ("a", "b", "a", 0.05),  # p equal to alpha: not significant
        ("a", "c", "", 0.01),  # no side is better: no win for anyone
        ("b", "c", "a", 0.049),  # "a": the pair's first side, b, is better
    )
    ranking = comparison.ranking_table(runs, pairs).set_index("optimizer")
    assert ranking["rank"].to_dict() == {"a": 1, "b": 1, "c": 2}
    assert ranking.loc["c", "beaten_by"] == "b"
    assert ranking.loc["b", "n_diverged"] == 1 and ranking.loc["b", "n"] == 2
    assert ranking.loc["b", "median_log10"] == math.inf


def test_missing_pairwise_columns_are_named():
    runs = block("p", "mse", {"a": [1.0], "b": [2.0]})
    with pytest.raises(ValueError, match="^ranking_table needs the column.s. better;"):
        comparison.ranking_table(runs, hand_pairs().drop(columns="better"))
    with pytest.raises(ValueError, match="^win_matrix needs the column.s. p_win;"):
        comparison.win_matrix(pd.DataFrame({"row": ["a"], "column": ["b"]}))


def test_empty_runs_give_empty_tables_with_their_columns():
    runs = pd.DataFrame(columns=comparison.RUN_COLUMNS)
    pairs = comparison.pairwise_table(runs)
    assert list(pairs.columns) == [
        "problem",
        "loss",
        "a",
        "b",
        *comparison.PAIR_COLUMNS,
        "p_holm",
        "winner",
        "decided_by",
    ]
    assert list(comparison.ranking_table(runs, pairs).columns) == [
        "problem",
        "loss",
        "optimizer",
        "n",
        "n_diverged",
        "median_log10",
        "rank",
        "beaten_by",
        "point_rank",
        "note",
    ]
    assert list(comparison.win_probabilities(runs).columns) == [
        "problem",
        "loss",
        "row",
        "column",
        "p_win",
        "n_pairs",
    ]


def test_pairwise_rows_carry_the_exact_interval_and_its_method():
    runs = separated_blocks()
    pairs = comparison.pairwise_table(runs)
    row = pairs[(pairs["loss"] == "l1") & (pairs["a"] == "a") & (pairs["b"] == "b")].iloc[0]
    a = np.log10(runs[(runs["loss"] == "l1") & (runs["optimizer"] == "a")]["final_loss"])
    b = np.log10(runs[(runs["loss"] == "l1") & (runs["optimizer"] == "b")]["final_loss"])
    ordered = np.sort(a.to_numpy() - b.to_numpy())  # ten seeds: x(2) and x(9)
    assert (row["ci_low"], row["ci_high"]) == (ordered[1], ordered[8])
    assert row["ci_method"].startswith("exact order statistics x(2), x(9) of 10")


def test_win_probabilities_of_three_use_shared_seeds_in_order_of_appearance():
    runs = block("p", "l1", {"c": [1.0, 2.0, 3.0], "a": [2.0, 2.0, 2.0], "b": [0.0, 5.0]})
    probabilities = comparison.win_probabilities(runs)
    assert list(probabilities.columns) == ["problem", "loss", "row", "column", "p_win", "n_pairs"]
    assert set(probabilities["loss"]) == {"l1"}
    by_pair = probabilities.set_index(["row", "column"])
    assert len(by_pair) == 6
    # b has no seed 2: two shared seeds with c, b wins seed 0 and loses seed 1
    assert by_pair.loc[("c", "b"), "n_pairs"] == 2 and by_pair.loc[("c", "b"), "p_win"] == 0.5
    assert by_pair.loc[("c", "a"), "p_win"] == pytest.approx((1 + 0.5 + 0) / 3)
    matrix = comparison.win_matrix(probabilities)
    assert list(matrix.index) == ["c", "a", "b"] and list(matrix.columns) == ["c", "a", "b"]
    assert matrix.loc["a", "b"] == pytest.approx(0.5)


def test_friedman_uses_complete_blocks_only_and_says_why_it_gives_no_test():
    # block p2 lacks c: dropped; p0 and p1 remain (two blocks: enough for the test)
    runs = pd.concat(
        [
            block("p0", "mse", {"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [5.0, 6.0]}),
            block("p1", "mse", {"a": [2.0, 2.0], "b": [1.0, 1.0], "c": [3.0, 3.0]}),
            block("p2", "mse", {"a": [9.0, 9.0], "b": [8.0, 8.0]}),
        ],
        ignore_index=True,
    )
    average, test = comparison.friedman(runs)
    assert list(average.columns) == ["optimizer", "average_rank", "n_blocks"]
    assert average["average_rank"].tolist() == [1.5, 1.5, 3.0]
    assert average["n_blocks"].tolist() == [2, 2, 2]
    assert set(test) == {
        "statistic",
        "p_value",
        "n_blocks",
        "n_optimizers",
        "blocks_dropped",
        "note",
    }
    assert (test["n_blocks"], test["n_optimizers"], test["blocks_dropped"]) == (2, 3, 1)
    assert test["note"] == "" and test["statistic"] == pytest.approx(3.0)  # 12/(2*3*4)*(9+9+36)-24
    one = comparison.friedman(runs[runs["problem"] == "p0"])[1]
    assert one["note"] == "Friedman test needs >= 2 complete (problem, loss) blocks"
    assert math.isnan(one["statistic"])
    two = comparison.friedman(runs[runs["optimizer"] != "c"])[1]
    assert two["note"] == "Friedman test needs >= 3 optimizers; see the paired tests per block"


def test_duplicate_runs_message_names_the_first_duplicate_and_the_fix():
    runs = block("p", "mse", {"a": [1.0, 2.0], "b": [1.0, 2.0]})
    with pytest.raises(
        ValueError,
        match=r"^paired comparisons need one run per \(problem, loss, optimizer, seed\); "
        r"p/mse/b seed 1 appears more than once\. Pass the evaluation runs of the chosen "
        r"variants only \(selection\.tuned_evaluation_runs\)\.$",
    ):
        comparison.pairwise_table(pd.concat([runs, runs.iloc[[3, 1]]]))
    with pytest.raises(ValueError, match="^paired comparisons needs the column.s. seed;"):
        comparison.pairwise_table(runs.drop(columns="seed"))


def test_paired_test_when_every_pair_ties_and_with_differences_below_one():
    tie = comparison.paired_test(np.array([1.0, 2.0, np.inf]), np.array([1.0, 2.0, np.inf]))
    assert set(tie) == set(comparison.PAIR_COLUMNS)
    assert (tie["test"], tie["statistic"], tie["p_value"], tie["rank_biserial"]) == (
        "none (all pairs tie)",
        0.0,
        1.0,
        0.0,
    )
    assert (tie["n_pairs"], tie["n_ties"], tie["better"], tie["p_a_better"]) == (3, 3, "", 0.5)
    # d = a - b: a wins five pairs (d < 0) and loses one by 0.3 decades
    d = np.array([-0.5, -0.25, -0.125, 0.3, -0.7, -0.9])
    b = np.arange(6.0)
    row = comparison.paired_test(b + d, b)
    assert row["p_a_better"] == pytest.approx(5 / 6)
    # |d| ranks 4, 2, 1, 3, 5, 6: R_a = 18, R_b = 3
    assert row["rank_biserial"] == pytest.approx((18 - 3) / 21)
    assert row["better"] == "a"
    assert comparison.paired_test(b, b + d)["better"] == "b"


def four_seed_block():
    """SGD NaN on all 4 seeds beside two optimizers that converged on all 4."""
    return block(
        "p",
        "mse",
        {
            "sgd": [math.nan] * 4,
            "adam": [1e-3, 2e-3, 5e-4, 1e-3],
            "mine": [1e-5, 2e-5, 3e-6, 1e-6],
        },
    )


def test_an_optimizer_diverged_on_every_seed_ranks_last_even_at_n_4():
    runs = four_seed_block()
    pairs = comparison.pairwise_table(runs).set_index(["a", "b"])
    # No test can separate 4 pairs after Holm over 3 (sign test 2 / 2**4 = 0.125, x 3) ...
    assert pairs.loc[("sgd", "adam"), "p_value"] == pytest.approx(stats.binomtest(0, 4).pvalue)
    assert pairs.loc[("sgd", "adam"), "p_holm"] == pytest.approx(0.375)
    # ... but diverging on every seed against none decides the pair.
    assert pairs.loc[("sgd", "adam"), ["winner", "decided_by"]].tolist() == ["adam", "divergence"]
    assert pairs.loc[("sgd", "mine"), "winner"] == "mine"
    assert pairs.loc[("adam", "mine"), ["winner", "decided_by"]].tolist() == ["", ""]
    ranking = comparison.ranking_table(runs).set_index("optimizer")
    assert ranking["rank"].to_dict() == {"mine": 1, "adam": 1, "sgd": 3}
    assert ranking.loc["sgd", "beaten_by"] == "adam,mine"
    assert ranking["point_rank"].to_dict() == {"mine": 1, "adam": 2, "sgd": 3}
    assert ranking.loc["sgd", "note"] == "diverged on all 4 seeds"
    # mine wins 4 of 4 seeds: visible as a win that is not significant, not a tie.
    assert ranking.loc["mine", "note"] == (
        "ahead of adam (4 of 4 seeds) on the median, not significant at n = 4 "
        "(no difference can be: 7 seeds needed)"
    )
    assert ranking.loc["adam", "note"] == ""


def test_a_diverged_optimizer_is_last_in_every_rank_statistic():
    runs = four_seed_block()
    wins = comparison.win_probabilities(runs).set_index(["row", "column"])["p_win"]
    assert wins[("sgd", "adam")] == 0.0 and wins[("sgd", "mine")] == 0.0
    assert wins[("adam", "sgd")] == 1.0 and wins[("mine", "sgd")] == 1.0
    two_blocks = pd.concat([runs, runs.assign(loss="l1")])
    average, _ = comparison.friedman(two_blocks)
    assert average.set_index("optimizer")["average_rank"].to_dict() == {
        "sgd": 3.0,
        "adam": 2.0,
        "mine": 1.0,
    }


def test_divergence_decides_only_when_one_side_diverged_on_every_shared_seed():
    assert comparison.divergence_winner([1.0, 2.0], [math.inf, math.inf]) == "a"
    assert comparison.divergence_winner([math.inf, math.inf], [1.0, 2.0]) == "b"
    assert comparison.divergence_winner([1.0, math.inf], [math.inf, math.inf]) == ""
    assert comparison.divergence_winner([math.inf], [math.inf]) == ""
    # a seed missing on one side is not shared: it does not count
    assert comparison.divergence_winner([1.0, math.nan], [math.inf, 3.0]) == "a"
    assert comparison.divergence_winner([], []) == ""


def test_a_run_diverged_in_training_is_worse_than_any_finite_one_whatever_the_metric():
    from optbench.reporting import ranking_metric

    runs = pd.DataFrame(
        {
            "problem": "p",
            "loss": "mse",
            "final_loss": [math.nan, 0.5],
            # the diverged run still wrote a (meaningless) held-out loss
            "first_nonfinite_step": [3.0, math.nan],
            "heldout_loss": [0.1, 0.9],
            "heldout_accuracy": [0.9, 0.5],
        }
    )
    judged, used = ranking_metric.with_ranking_value(runs)
    assert used == {("p", "mse"): "heldout_loss"}
    assert math.isnan(judged["ranking_value"].iloc[0]) and judged["ranking_value"].iloc[1] == 0.9
