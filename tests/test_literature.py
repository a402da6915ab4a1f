"""The two published findings the claims check tests (optbench.reporting.literature)."""

import pandas as pd
import pytest

from optbench.reporting import literature

CLASSES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "lion": "pytorch_optimizer.Lion"}


def curve(adam_value, other_value, pairs=8, budgets=4):
    """best_of_k rows: in every pair and budget, adamw at adam_value, lion at other_value."""
    rows = []
    for pair in range(pairs):
        for k in range(1, budgets + 1):
            for optimizer, value in (("adamw", adam_value(k)), ("lion", other_value(k))):
                rows.append(
                    {"problem": f"p{pair}", "loss": "mse", "optimizer": optimizer, "k": k,
                     "n_candidates": budgets, "expected_log10": value}
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_adam_family_by_class_name():
    assert [literature.adam_family(c) for c in CLASSES.values()] == [True, True, False, False]
    assert literature.adam_family("pytorch_optimizer.ScheduleFreeAdamW")


def test_the_adam_family_winning_at_every_small_budget_supports_the_finding():
    row = literature.small_budgets(curve(lambda k: -3.0, lambda k: -2.0), CLASSES)
    assert row["verdict"] == "supported"
    # 8 of 8 pairs per budget: one-sided sign test p = 2^-8, times 4 budgets (Holm).
    assert row["p_value"] == pytest.approx(4 * 0.5**8)
    assert (
        "k=1: Adam family best in 8, another in 0 of 8 pairs (Holm p 0.0156 for the Adam "
        "family, 1 for the others)" in row["numbers"]
    )


def test_the_others_winning_at_a_small_budget_contradict_it():
    row = literature.small_budgets(
        curve(lambda k: -3.0 if k > 1 else -1.0, lambda k: -2.0), CLASSES
    )
    assert row["verdict"] == "contradicted"
    few = literature.small_budgets(curve(lambda k: -3.0, lambda k: -2.0, pairs=3), CLASSES)
    assert few["verdict"] == "not shown"  # 3 pairs cannot show it at 5 % after Holm


def test_the_small_budget_finding_says_why_it_cannot_be_tested():
    untuned = curve(lambda k: -3.0, lambda k: -2.0, budgets=1)
    assert literature.small_budgets(untuned, CLASSES)["verdict"].startswith(
        "not testable: nothing is tuned"
    )
    only_adam = curve(lambda k: -3.0, lambda k: -2.0)
    only_adam = only_adam[only_adam["optimizer"] == "adamw"]
    assert (
        "needs an Adam-family optimizer and another"
        in (literature.small_budgets(only_adam, CLASSES)["verdict"])
    )


def runs_and_choice(decades_worse: float):
    """adam is tuned (lr0.1 chosen); sgd runs its defaults only and is the best default
    on the tuning seeds; on evaluation seeds sgd's defaults are ``decades_worse``
    (times 1 + noise) than tuned adam."""
    rows = []
    for seed in range(100, 103):
        rows += [
            ("tuning", "adam", "base", seed, 1e-1),
            ("tuning", "adam", "lr0.1", seed, 1e-6),
            ("tuning", "sgd", "base", seed, 1e-2),
        ]
    for seed in range(10):
        tuned = 1e-6 * (1 + seed / 10)
        rows += [
            ("evaluation", "adam", "base", seed, 1e-1),
            ("evaluation", "adam", "lr0.1", seed, tuned),
            ("evaluation", "sgd", "base", seed, tuned * 10**decades_worse),
        ]
    runs = pd.DataFrame(rows, columns=["role", "optimizer", "variant", "seed", "final_loss"])
    runs = runs.assign(problem="p", loss="mse")
    choice = pd.DataFrame(
        [("p", "mse", "adam", "lr0.1", 2), ("p", "mse", "sgd", "base", 1)],
        columns=["problem", "loss", "optimizer", "variant", "n_candidates"],
    )
    return runs, choice


def test_defaults_within_half_a_decade_of_tuning_support_the_crowded_valley_finding():
    row = literature.defaults_against_tuning(*runs_and_choice(0.25), None)
    assert row["verdict"] == "supported"
    assert "p/mse: sgd at defaults - tuned adam = +0.25 decades [+0.25, +0.25]" in row["numbers"]
    assert "defaults at most 0.5 decades worse in 1 of 1 pairs" in row["numbers"]
    far = literature.defaults_against_tuning(*runs_and_choice(2.0), None)
    assert far["verdict"] == "contradicted"
    assert "clearly worse in 1;" in far["numbers"]
    near_margin = literature.defaults_against_tuning(*runs_and_choice(0.45), None)
    assert near_margin["verdict"] == "supported"
    beyond = literature.defaults_against_tuning(*runs_and_choice(0.55), None)
    assert beyond["verdict"] == "contradicted"
    # Defaults far better than the tuned optimizer do not contradict "about as well":
    # non-inferiority, with the pair counted as better.
    better = literature.defaults_against_tuning(*runs_and_choice(-2.0), None)
    assert better["verdict"] == "supported"
    assert "(more than 0.5 decades better in 1)" in better["numbers"]
    runs, choice = runs_and_choice(0.25)
    untuned = literature.defaults_against_tuning(runs, choice.assign(n_candidates=1), None)
    assert untuned["verdict"].startswith("not testable: nothing is tuned")


def test_a_grid_of_fewer_than_four_candidates_is_tested_at_the_budgets_it_has():
    """Two candidates per optimizer: budgets 3 and 4 are not in the grid. They counted
    as "0 of 0 pairs" with p = 1, so the finding could never be supported, and doubled
    Holm's multiplier for k = 1 and 2."""
    two = curve(lambda k: -3.0, lambda k: -2.0, budgets=2)
    row = literature.small_budgets(two, CLASSES)
    assert row["verdict"] == "supported"
    assert row["p_value"] == pytest.approx(2 * 0.5**8)  # 8 of 8 pairs, Holm over 2 budgets
    assert "k=3" not in row["numbers"] and "(the grid's budgets: k = 1..2)" in row["test"]
    four = literature.small_budgets(curve(lambda k: -3.0, lambda k: -2.0), CLASSES)
    assert four["test"] == "sign test across pairs per budget, one-sided, Holm across budgets"
