"""The two findings of Wen et al. (2025) in the claims check, on planted data."""

import numpy as np
import pandas as pd

from optbench.reporting import scaling, scaling_claims

BUDGETS = [100, 200, 400, 800]
SIZES = {"s": 1000, "l": 16000}
CLASSES = {"adamw": "AdamW", "muon": "Muon"}


def family(sizes=SIZES, budgets=BUDGETS) -> dict:
    return {
        f"f-{size}-b{budget}": {"family": "f", "size": size, "budget": budget, "parameters": count}
        for size, count in sizes.items()
        for budget in budgets
    }


def planted_runs(speedups: dict, seeds=10, rng=None) -> pd.DataFrame:
    """AdamW at 10 b^-1/2; Muon at the baseline's level at speed-up x b, per size."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for size in SIZES:
        for budget in BUDGETS:
            for seed in range(seeds):
                noise = 10 ** rng.normal(0, 0.02, 2)
                levels = {
                    "adamw": 10 * budget**-0.5 * noise[0],
                    "muon": 10 * (speedups[size] * budget) ** -0.5 * noise[1],
                }
                for optimizer, level in levels.items():
                    rows.append(
                        {
                            "problem": f"f-{size}-b{budget}",
                            "loss": "ce",
                            "optimizer": optimizer,
                            "variant": "base",
                            "seed": seed,
                            "ranking_value": level,
                        }
                    )
    return pd.DataFrame(rows)


def verdict(runs, members=None, classes=CLASSES, baseline="adamw"):
    return scaling_claims.speedup_shrinks(
        runs, members or family(), baseline, classes, resamples=400
    )["verdict"]


def test_a_speedup_that_shrinks_with_size_supports_finding_one():
    assert verdict(planted_runs({"s": 1.8, "l": 1.1})) == "supported"


def test_a_speedup_that_grows_with_size_contradicts_it():
    assert verdict(planted_runs({"s": 1.1, "l": 1.8})) == "contradicted"


def test_muon_and_soap_disagreeing_get_a_verdict_each():
    # Muon's speed-up shrinks from 1.8x to 1.1x; SOAP's grows from 1.1x to 1.8x.
    muon = planted_runs({"s": 1.8, "l": 1.1})
    soap = planted_runs({"s": 1.1, "l": 1.8}, rng=np.random.default_rng(1))
    soap = soap[soap["optimizer"] == "muon"].assign(optimizer="soap")
    classes = CLASSES | {"soap": "SOAP"}
    assert verdict(pd.concat([muon, soap]), classes=classes) == (
        "contradicted: supported for muon, contradicted for soap"
    )


def test_censored_speedups_print_as_bounds_and_p_values_are_never_zero():
    # Muon at 4x the baseline's speed at the small size: beyond the largest
    # budget at 400 and 800 steps, so the point is "> 2x" there, not "infx".
    row = scaling_claims.speedup_shrinks(
        planted_runs({"s": 4.0, "l": 1.1}), family(), "adamw", CLASSES, resamples=400
    )
    assert "inf" not in row["numbers"]
    assert "f/ce/muon at 400 steps: > 2x (s) -> " in row["numbers"]
    assert "log ratio > 0" in row["numbers"]
    assert "at 800 steps: > 1x and > 1x" in row["numbers"]  # censored alike: untested
    # Every resample shrinks in the 3 tests: the smallest p 400 resamples can
    # give, 1/401, times Holm's 3.
    assert row["p_value"] == 3 / 401


def test_grids_without_the_axes_or_optimizers_say_why_not():
    runs = planted_runs({"s": 1.8, "l": 1.1})
    assert verdict(runs, classes={"adamw": "AdamW", "muon": "Lion"}) == (
        "not testable: the grid has no matrix-based optimizer (Muon, SOAP)"
    )
    one_size = family(sizes={"s": 1000})
    assert "no size axis" in verdict(runs[runs["problem"].isin(one_size)], one_size)
    one_budget = family(budgets=[400])
    assert "no budget axis" in verdict(runs[runs["problem"].isin(one_budget)], one_budget)
    assert "Adam-family baseline" in verdict(runs, baseline=None)
    few = runs[runs["seed"] < 4]
    assert "fewer than 6 evaluation seeds" in verdict(few)


def flip_case(flip: bool, end_split: int = 10):
    """Two optimizers at 100 and 400 steps; mid-run (step 100 of the 400-step
    runs) a leads by 0.3 decades; at the end of the 100-step runs b leads (flip)
    or a does (no flip), on every seed."""
    members = {
        "f-b100": {"family": "f", "size": None, "budget": 100, "parameters": 10},
        "f-b400": {"family": "f", "size": None, "budget": 400, "parameters": 10},
    }
    rng = np.random.default_rng(3)
    rows, curves = [], []
    for seed in range(10):
        jitter = 10 ** rng.normal(0, 0.01, 4)
        end_a, end_b = (1.0, 0.5) if flip else (0.5, 1.0)
        if seed >= end_split:  # these seeds order the end the other way
            end_b = 2.0
        for optimizer, value in (("a", end_a * jitter[0]), ("b", end_b * jitter[1])):
            rows.append(
                {
                    "problem": "f-b100",
                    "loss": "ce",
                    "optimizer": optimizer,
                    "variant": "base",
                    "seed": seed,
                    "ranking_value": value,
                }
            )
            rows.append(
                {
                    "problem": "f-b400",
                    "loss": "ce",
                    "optimizer": optimizer,
                    "variant": "base",
                    "seed": seed,
                    "ranking_value": 0.1,
                }
            )
        for optimizer, value in (("a", 0.5 * jitter[2]), ("b", 1.0 * jitter[3])):
            curves.append(
                {
                    "problem": "f-b400",
                    "loss": "ce",
                    "optimizer": optimizer,
                    "seed": seed,
                    "step": 100,
                    "heldout_loss": value,
                }
            )
    runs, curves = pd.DataFrame(rows), pd.DataFrame(curves)
    steps = pd.DataFrame(
        {
            "problem": "f-b400",
            "loss": "ce",
            "optimizer": ["a", "b"],
            "step": 100,
            "median": [0.5, 1.0],
        }
    )
    used = dict.fromkeys([("f-b100", "ce"), ("f-b400", "ce")], "heldout_loss")
    flips = scaling.rank_flip_table(runs, steps, members, used, curves)
    return runs, flips, members, curves


def test_a_flip_significant_both_ways_supports_finding_two():
    runs, flips, members, curves = flip_case(flip=True)
    row = scaling_claims.rankings_flip(runs, flips, members, curves)
    assert row["verdict"] == "supported"
    assert "1 flipped pairs, 1 significant" in row["numbers"]


def test_no_flip_shows_nothing_and_no_curves_is_not_testable():
    runs, flips, members, curves = flip_case(flip=False)
    assert scaling_claims.rankings_flip(runs, flips, members, curves)["verdict"] == "not shown"
    row = scaling_claims.rankings_flip(runs, flips, members, None)
    assert row["verdict"].startswith("not testable: no held-out curves")
    empty = scaling.rank_flip_table(runs, runs.iloc[:0], {}, {}, None)
    row = scaling_claims.rankings_flip(runs, empty, {}, None)
    assert row["verdict"].startswith("not testable: the grid has no budget axis")


def test_a_flip_of_the_medians_that_no_test_confirms_shows_nothing():
    # At the end b leads on 6 seeds by 0.3 decades and trails on 4 by 0.3: its
    # median leads (a flip in rank_flips.tsv), but no paired test can tell.
    runs, flips, members, curves = flip_case(flip=True, end_split=6)
    assert flips["n_flipped"].tolist() == [1]
    row = scaling_claims.rankings_flip(runs, flips, members, curves)
    assert row["verdict"] == "not shown"
    assert "1 flipped pairs, 0 significant" in row["numbers"]
