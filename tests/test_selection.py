"""Variant selection on tuning seeds, tuning budgets and the best-of-k estimator."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from optbench.reporting import selection


def runs(rows):
    """rows: (optimizer, variant, role, seed, final_loss) on problem p, loss mse."""
    frame = pd.DataFrame(rows, columns=["optimizer", "variant", "role", "seed", "final_loss"])
    return frame.assign(problem="p", loss="mse")


def planted():
    """lr0.01 is better on the tuning seeds 0-4, lr0.1 on the evaluation seeds 10-19."""
    rows = []
    for seed in range(5):
        rows.append(("sgd", "lr0.01", "tuning", seed, 1e-6))
        rows.append(("sgd", "lr0.1", "tuning", seed, 1e-4))
    for seed in range(10, 20):
        rows.append(("sgd", "lr0.01", "evaluation", seed, 1e-3))
        rows.append(("sgd", "lr0.1", "evaluation", seed, 1e-9))
    return runs(rows)


def test_selection_uses_tuning_seeds_only():
    metrics = planted()
    chosen = selection.select_variants(metrics)
    assert chosen["variant"].tolist() == ["lr0.01"]
    assert chosen["score"].iloc[0] == pytest.approx(-6)
    assert chosen[["n_candidates", "n_tuning_seeds", "n_tied"]].iloc[0].tolist() == [2, 5, 1]
    # choosing on the evaluation seeds would have picked the other variant
    on_evaluation = metrics.assign(
        role=metrics["role"].map({"tuning": "evaluation", "evaluation": "tuning"})
    )
    assert selection.select_variants(on_evaluation)["variant"].tolist() == ["lr0.1"]
    evaluated = selection.tuned_evaluation_runs(metrics, chosen)
    assert set(evaluated["variant"]) == {"lr0.01"} and set(evaluated["role"]) == {"evaluation"}
    assert sorted(evaluated["seed"]) == list(range(10, 20))


def test_a_variant_that_diverges_on_most_seeds_loses_to_a_finite_one():
    metrics = runs(
        [("adam", "lr1.0", "tuning", s, v) for s, v in enumerate([1e-12, np.inf, np.nan])]
        + [("adam", "lr0.1", "tuning", s, 1e-3) for s in range(3)]
    )
    assert selection.select_variants(metrics)["variant"].tolist() == ["lr0.1"]
    scores = selection.variant_scores(metrics)
    assert scores.set_index("variant")["n_diverged"].to_dict() == {"lr1.0": 2, "lr0.1": 0}


def test_ties_go_to_the_preferred_variant():
    metrics = runs(
        [("sgd", name, "tuning", s, np.inf) for name in ("lr1.0", "lr0.1") for s in range(3)]
    )
    chosen = selection.select_variants(metrics, order=["lr0.1", "lr1.0"])
    assert chosen["variant"].tolist() == ["lr0.1"] and chosen["n_tied"].tolist() == [2]
    # without an order: the first variant in the table
    assert selection.select_variants(metrics)["variant"].tolist() == ["lr1.0"]
    with pytest.raises(ValueError, match="lr1.0"):
        selection.select_variants(metrics, order=["lr0.1"])


def test_nothing_to_tune_and_missing_tuning_seeds():
    single = runs([("sgd", "base", "evaluation", s, 0.1) for s in range(3)])
    chosen = selection.select_variants(single)
    assert chosen["variant"].tolist() == ["base"] and math.isnan(chosen["score"].iloc[0])
    several = runs([("sgd", v, "evaluation", 0, 0.1) for v in ("lr0.1", "lr1.0")])
    with pytest.raises(ValueError, match="tuning_seeds"):
        selection.select_variants(several)


def test_unequal_tuning_budgets_are_flagged():
    metrics = runs(
        [("sgd", v, "tuning", 0, 0.1) for v in ("lr0.1", "lr1.0")]
        + [("adam", v, "tuning", 0, 0.1) for v in ("lr0.1", "lr1.0", "lr0.01")]
    )
    counts = selection.candidate_counts(metrics)
    assert counts.set_index("optimizer")["n_variants"].to_dict() == {"sgd": 2, "adam": 3}
    assert not counts["equal"].any()


def brute_force(select, report, k):
    """Mean and lower median over every k-subset of the value the tuner keeps."""
    kept = []
    for subset in itertools.combinations(range(len(select)), k):
        best = min(subset, key=lambda i: (select[i], i))  # ties: earlier candidate
        kept.append(report[best])
    kept.sort()
    return np.mean(kept), kept[(len(kept) - 1) // 2]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_expected_best_of_k_matches_enumeration(size):
    rng = np.random.default_rng(size)
    select = rng.integers(0, 4, size=size).astype(float)  # ties on purpose
    report = rng.normal(size=size)
    expected, median = selection.expected_best_of_k(select, report)
    for k in range(1, size + 1):
        mean_k, median_k = brute_force(list(select), list(report), k)
        assert expected[k - 1] == pytest.approx(mean_k, rel=1e-12, abs=1e-12)
        assert median[k - 1] == median_k
    own, _ = selection.expected_best_of_k(select)
    assert own[-1] == select.min() and own[0] == pytest.approx(select.mean())


def test_best_of_k_with_a_failed_candidate():
    expected, median = selection.expected_best_of_k([np.inf, -5.0, -3.0])
    assert expected[0] == np.inf  # one draw may be the failed candidate
    assert expected[1] == pytest.approx((-5 - 5 - 3) / 3)  # pairs {inf,-5},{inf,-3},{-5,-3}
    assert expected[2] == -5.0
    assert median[0] == -3.0  # kept values -5, -3, inf: lower median


def test_tuning_curve_ends_at_the_tuned_result_and_starts_at_the_average():
    metrics = planted()
    curve = selection.tuning_curve(metrics)
    assert curve["k"].tolist() == [1, 2]
    # k = K keeps the tuning winner lr0.01, reported by its evaluation median 1e-3
    assert curve["expected_log10"].iloc[-1] == pytest.approx(-3)
    assert curve["expected_log10"].iloc[0] == pytest.approx((-3 - 9) / 2)


def test_tuning_gain_pairs_base_and_tuned_by_seed():
    rows = [("sgd", "lr0.01", "tuning", 0, 1e-6), ("sgd", "base", "tuning", 0, 1e-2)]
    for seed in range(10, 16):
        rows.append(("sgd", "lr0.01", "evaluation", seed, 10.0 ** -(6 + seed % 2)))
        rows.append(("sgd", "base", "evaluation", seed, 1e-2))
    metrics = runs(rows)
    chosen = selection.select_variants(metrics)
    gain = selection.tuning_gain(metrics, chosen, base="base").iloc[0]
    assert gain["tuned_variant"] == "lr0.01" and gain["n_pairs"] == 6
    assert gain["base_median_log10"] == pytest.approx(-2)
    assert gain["tuned_median_log10"] == pytest.approx(-6.5)
    assert gain["median_diff"] == pytest.approx(-4.5)  # tuned - base, in decades
    assert gain["test"] == "sign"  # the magnitudes tie (4 and 5 decades)
    assert gain["p_value"] == pytest.approx(2 / 2**6)  # all six favour tuning


def test_sensitivity_table_has_one_row_per_variant():
    table = selection.sensitivity_table(planted())
    assert table["variant"].tolist() == ["lr0.01", "lr0.1"]
    assert table["geo_mean"].tolist() == pytest.approx([1e-3, 1e-9])
    assert (table["n"] == 10).all()


def test_input_errors_name_the_problem_and_the_fix():
    metrics = planted()
    with pytest.raises(ValueError, match="^selection needs the column.s. role;"):
        selection.select_variants(metrics.drop(columns="role"))
    with pytest.raises(
        ValueError, match=r"^role must be 'tuning' or 'evaluation', got \['train'\]$"
    ):
        selection.select_variants(metrics.assign(role="train"))
    with pytest.raises(
        ValueError, match="^variant.s. lr0.01, lr0.1 are not in the preference order$"
    ):
        selection.select_variants(metrics, order=["lr1.0"])
    several = runs([("sgd", v, "evaluation", 0, 0.1) for v in ("lr0.1", "lr1.0")])
    with pytest.raises(
        ValueError,
        match="^p/mse/sgd has 2 variants but no tuning-seed runs to choose between them: "
        r"set tuning_seeds \(disjoint from seeds\)\.$",
    ):
        selection.select_variants(several)
    with pytest.raises(ValueError, match="^tuned_evaluation_runs needs the column.s. variant;"):
        selection.tuned_evaluation_runs(metrics, metrics[selection.ENTRY])
    with pytest.raises(ValueError, match="^candidate_counts needs the column.s. variant;"):
        selection.candidate_counts(metrics.drop(columns="variant"))
    message = "^select and report values must be non-empty 1-D arrays of one length$"
    for select, report in (([], None), ([[1.0]], None), ([1.0, 2.0], [1.0])):
        with pytest.raises(ValueError, match=message):
            selection.expected_best_of_k(select, report)


def test_cells_keep_their_order_and_untuned_cells_their_counts():
    metrics = runs(
        [("zeta", "base", "evaluation", s, 0.1) for s in range(3)]
        + [("adam", v, "tuning", s, 10.0**-s) for v in ("lr0.1", "lr1.0") for s in range(2)]
    )
    chosen = selection.select_variants(metrics)
    assert chosen["optimizer"].tolist() == ["zeta", "adam"]  # first appearance, not by name
    zeta = chosen.iloc[0]
    assert (zeta["variant"], zeta["n_candidates"], zeta["n_tied"], zeta["n_tuning_seeds"]) == (
        "base",
        1,
        1,
        0,
    )
    adam = chosen.iloc[1]
    assert (adam["n_candidates"], adam["n_tied"], adam["n_tuning_seeds"]) == (2, 2, 2)
    counts = selection.candidate_counts(metrics)
    assert counts["optimizer"].tolist() == ["zeta", "adam"]
    assert counts["equal"].tolist() == [False, False]
    same = selection.candidate_counts(metrics[metrics["optimizer"] == "adam"])
    assert same["equal"].tolist() == [True]


def test_tuning_gain_columns_a_base_per_optimizer_and_a_missing_base():
    rows = []
    for seed in range(10, 14):
        rows.append(("sgd", "lr0.01", "evaluation", seed, 1e-6))
        rows.append(("sgd", "plain", "evaluation", seed, 1e-2))
        rows.append(("adam", "lr0.01", "evaluation", seed, 1e-4))
    metrics = runs(rows)
    chosen = pd.DataFrame(
        {"problem": "p", "loss": "mse", "optimizer": ["sgd", "adam"], "variant": "lr0.01"}
    )
    gain = selection.tuning_gain(metrics, chosen, base={"sgd": "plain", "adam": "base"})
    assert list(gain.columns) == [
        "problem",
        "loss",
        "optimizer",
        "base_variant",
        "tuned_variant",
        "n_pairs",
        "base_median_log10",
        "tuned_median_log10",
        "median_diff",
        "ci_low",
        "ci_high",
        "ci_method",
        "test",
        "p_value",
    ]
    sgd, adam = gain.iloc[0], gain.iloc[1]
    assert sgd["base_variant"] == "plain" and sgd["n_pairs"] == 4
    assert sgd["base_median_log10"] == pytest.approx(-2) and sgd["median_diff"] == pytest.approx(-4)
    # four pairs: too few for an exact 95 % interval of the median difference
    assert math.isnan(sgd["ci_low"]) and math.isnan(sgd["ci_high"])
    assert sgd["ci_method"].startswith("n too small")
    # adam has no runs of its base variant: nothing to pair, no base median
    assert adam["base_variant"] == "base" and adam["n_pairs"] == 0
    assert math.isnan(adam["base_median_log10"]) and adam["tuned_median_log10"] == pytest.approx(-4)


def test_tuning_curve_columns_medians_and_floor():
    metrics = planted()
    curve = selection.tuning_curve(metrics)
    assert list(curve.columns) == [
        *selection.ENTRY,
        "k",
        "n_candidates",
        "expected_log10",
        "median_log10",
        "expected_low",
        "expected_high",
        "ci_method",
        "n_tuning_seeds",
        "n_evaluation_seeds",
    ]
    assert curve["n_candidates"].tolist() == [2, 2]
    # 5 tuning and 10 evaluation seeds, no noise: every resample gives the estimate
    assert curve["expected_low"].tolist() == pytest.approx(curve["expected_log10"].tolist())
    assert curve["expected_high"].tolist() == pytest.approx(curve["expected_log10"].tolist())
    assert curve[["n_tuning_seeds", "n_evaluation_seeds"]].values.tolist() == [[5, 10]] * 2
    # k = 1 keeps either variant: reported -3 or -9, lower median -9; k = 2 keeps lr0.01 (-3)
    assert curve["median_log10"].tolist() == pytest.approx([-9, -3])
    floored = selection.tuning_curve(metrics, floor=1e-6)
    assert floored["median_log10"].tolist() == pytest.approx([-6, -3])
    order = selection.tuning_curve(metrics, order=["lr0.1", "lr0.01"])
    assert order["expected_log10"].tolist() == pytest.approx(curve["expected_log10"].tolist())


def test_tables_have_exactly_their_columns():
    metrics = planted()
    assert list(selection.variant_scores(metrics).columns) == [
        *selection.ENTRY,
        "variant",
        "n_seeds",
        "n_diverged",
        "score",
    ]
    chosen = selection.select_variants(metrics)
    assert list(selection.tuned_evaluation_runs(metrics, chosen).columns) == list(metrics.columns)


def test_the_floor_reaches_the_choice_and_the_sensitivity_table():
    # below the floor 1e-3 both variants score -3: the tie goes to the one listed first
    metrics = runs(
        [("sgd", "lr0.1", "tuning", s, 1e-3) for s in range(2)]
        + [("sgd", "lr0.01", "tuning", s, 1e-5) for s in range(2)]
    )
    assert selection.select_variants(metrics)["variant"].tolist() == ["lr0.01"]
    floored = selection.select_variants(metrics, floor=1e-3)
    assert floored["variant"].tolist() == ["lr0.1"] and floored["n_tied"].tolist() == [2]
    table = selection.sensitivity_table(metrics, role="tuning", floor=1e-3)
    assert table["n_floored"].tolist() == [0, 2]


def test_tuning_gain_of_a_chosen_variant_without_evaluation_runs():
    metrics = runs([("sgd", "base", "evaluation", s, 1e-2) for s in range(3)])
    chosen = pd.DataFrame(
        {"problem": ["p"], "loss": ["mse"], "optimizer": ["sgd"], "variant": ["lr1"]}
    )
    gain = selection.tuning_gain(metrics, chosen, base="base").iloc[0]
    assert gain["n_pairs"] == 0 and math.isnan(gain["tuned_median_log10"])
    assert gain["base_median_log10"] == pytest.approx(-2)


# --- The interval of the expected best of k: coverage on planted candidates ---

# Five candidates whose true log10 results are planted; a run's log10 result is
# its candidate's plus the seed's effect (shared by the candidates: a seed is
# one run of each) plus the run's own noise.
PLANTED_CENTRES = np.array([-3.0, -2.7, -2.5, -2.2, -2.0])
SEED_EFFECT, RUN_NOISE = 0.15, 0.25


def planted_log10(rng, seeds):
    shared = SEED_EFFECT * rng.standard_normal(seeds)
    return PLANTED_CENTRES[:, None] + shared + RUN_NOISE * rng.standard_normal((5, seeds))


def simulated_tuner(rng, k, tuning_seeds, tuners=40_000):
    """The truth, by running tuners rather than by the estimator's weights: each
    draws k of the 5 candidates, keeps the one with the lowest median on fresh
    tuning seeds and gets its planted centre (what infinitely many evaluation
    seeds would report; the noise is symmetric, so its median is the centre)."""
    total = 0.0
    for _ in range(tuners // 1000):
        drawn = np.argsort(rng.random((1000, 5)), axis=1)[:, :k]
        shared = SEED_EFFECT * rng.standard_normal((1000, 1, tuning_seeds))
        scores = PLANTED_CENTRES[drawn][..., None] + shared
        scores = np.median(scores + RUN_NOISE * rng.standard_normal(scores.shape), axis=-1)
        kept = np.take_along_axis(drawn, np.argmin(scores, axis=1)[:, None], axis=1)
        total += PLANTED_CENTRES[kept].sum()
    return total / tuners


def coverage(rng, tuning_seeds, evaluation_seeds, studies):
    truth = np.array([simulated_tuner(rng, k, tuning_seeds) for k in range(1, 6)])
    covered, methods = np.zeros(5), set()
    for _ in range(studies):
        interval = selection.best_of_k_intervals(
            planted_log10(rng, tuning_seeds), planted_log10(rng, evaluation_seeds), rng
        )
        low, high = interval["expected_low"].to_numpy(), interval["expected_high"].to_numpy()
        covered += (low <= truth) & (truth <= high)
        methods |= set(interval["ci_method"])
    return covered / studies, methods


def test_the_best_of_k_interval_covers_the_planted_result(monkeypatch):
    # 500 resamples instead of 2000 keep the test at a few seconds; the
    # intervals' ends move by about 0.01 decades.
    monkeypatch.setattr(selection, "BEST_OF_K_RESAMPLES", 500)
    rng = np.random.default_rng(36)
    # configs/modern.yaml: 3 tuning and 10 evaluation seeds; and the fewest allowed
    for seeds in ((3, 10), (2, 6)):
        shares, methods = coverage(rng, *seeds, studies=150)
        # nominal 95 %; measured 93-99 % (150 studies: a standard error of 1.8 points)
        assert shares.min() >= 0.89, (seeds, shares)
        assert methods == {selection.BEST_OF_K_METHOD}


def test_below_six_evaluation_seeds_the_interval_would_not_hold_so_none_is_given(monkeypatch):
    monkeypatch.setattr(selection, "BEST_OF_K_RESAMPLES", 500)
    rng = np.random.default_rng(7)
    interval = selection.best_of_k_intervals(planted_log10(rng, 3), planted_log10(rng, 5), rng)
    assert interval["expected_low"].isna().all() and interval["expected_high"].isna().all()
    assert set(interval["ci_method"]) == {"n too small: 5 evaluation seeds (6 needed)"}
    one = selection.best_of_k_intervals(planted_log10(rng, 1), planted_log10(rng, 10), rng)
    assert one["ci_method"].iloc[0] == selection.BEST_OF_K_METHOD  # k = 1 chooses nothing
    assert one["expected_low"].iloc[1:].isna().all()
    assert one["ci_method"].iloc[1].startswith("n too small: 1 tuning seed,")
    # Why: with 3 evaluation seeds the same bootstrap falls well below 95 %.
    monkeypatch.setattr(selection, "BEST_OF_K_MIN_EVALUATION_SEEDS", 1)
    shares, _ = coverage(rng, 3, 3, studies=150)
    assert shares.min() < 0.88, shares
