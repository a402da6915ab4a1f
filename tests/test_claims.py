"""The article's claims checked on planted curves whose verdicts are known."""

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, SCHEMA
from optbench.planning import settings
from optbench.reporting import claims
from optbench.reporting.analysis_context import context_for

SEEDS = list(range(10))
STEPS = 40


def decay(rates, wiggle=0.0):
    """Runs x steps: exp(-rate t) per seed, times an optional damped oscillation."""
    t = np.arange(STEPS)
    rates = np.asarray(rates, dtype=float)[:, None]
    return 2.0 * np.exp(-rates * t) * (1 + wiggle * np.cos(2.5 * t) * np.exp(-0.02 * t))


def test_oscillation_by_hand():
    # second half of 6 steps: [3, 1, 2]; the one rise is 1, initial loss 4
    assert claims.oscillation([[4.0, 3.0, 2.0, 3.0, 1.0, 2.0]]).tolist() == [0.25]
    assert claims.oscillation([[4.0, 3.0, np.inf, 1.0, 1.0, 1.0]]).tolist() == [np.inf]


def test_fastest_to_near_zero():
    rng = np.random.default_rng(0)
    fast, slow = 1.0 + rng.uniform(0, 0.3, 10), 0.3 + rng.uniform(0, 0.1, 10)
    curves = {"rmsprop": (SEEDS, decay(fast)), "sgd": (SEEDS, decay(slow))}
    row = claims.fastest_to_near_zero(curves)
    assert row["verdict"] == "supported"
    # ln(1000) / rate steps, rounded up, per seed
    assert row["statistic"] == np.median(np.ceil(np.log(1000) / fast))
    assert row["p_value"] < 0.05 and "10/10 reached" in row["numbers"]
    swapped = {"rmsprop": (SEEDS, decay(slow)), "sgd": (SEEDS, decay(fast))}
    assert claims.fastest_to_near_zero(swapped)["verdict"] == "contradicted"
    same = {"rmsprop": (SEEDS, decay(fast)), "sgd": (SEEDS, decay(fast))}
    assert claims.fastest_to_near_zero(same)["verdict"] == "not shown"


def test_runs_pair_by_seed_not_by_position():
    rates = np.linspace(0.1, 0.3, 10)  # oscillation differs from seed to seed
    shuffled = [3, 7, 0, 9, 1, 5, 2, 8, 4, 6]  # b lists the same runs in another seed order
    curves = {"a": (SEEDS, decay(rates, 0.3)), "b": (shuffled, decay(rates, 0.3)[shuffled])}
    row = claims.damps_faster(curves, "a", "b")
    assert row["p_value"] == 1.0 and "rank-biserial 0.00" in row["numbers"]


def test_the_fastest_claim_is_holm_corrected():
    # six seeds, two rivals: each comparison alone has exact p = 2/64 < 0.05,
    # Holm makes the smaller of the two 2 * 2/64 = 0.0625
    six = SEEDS[:6]
    rates = 1.0 + np.linspace(0, 0.3, 6)
    curves = {
        "rmsprop": (six, decay(rates)),
        "sgd": (six, decay(rates / 3)),
        "adam": (six, decay(rates / 3.5)),
    }
    row = claims.fastest_to_near_zero(curves)
    assert row["p_value"] == pytest.approx(2 * 2 / 64)
    assert row["verdict"] == "not shown"


def test_damping():
    rng = np.random.default_rng(1)
    rates = 0.2 + rng.uniform(0, 0.05, 10)
    curves = {
        "adam": (SEEDS, decay(rates, wiggle=0.1)),
        "momentum_sgd": (SEEDS, decay(rates, wiggle=0.6)),
    }
    row = claims.damps_faster(curves)
    assert row["verdict"] == "supported"
    assert row["p_value"] == pytest.approx(2 / 2**10)  # exact: adam lower on every seed
    flipped = {"adam": curves["momentum_sgd"], "momentum_sgd": curves["adam"]}
    assert claims.damps_faster(flipped)["verdict"] == "contradicted"


def test_none_near_zero():
    far = {name: (SEEDS, decay(np.full(10, 0.06))) for name in ("sgd", "adam")}
    row = claims.none_near_zero(far)  # exp(-0.06 * 39) = 0.096 of the initial loss
    assert row["verdict"] == "supported" and row["statistic"] == 0.0
    assert row["p_value"] == pytest.approx(2 * 0.5**10)  # Holm over 2 of P(0 of 10) = 2^-10
    assert "in 40 steps" in row["claim"]
    near = far | {"rmsprop": (SEEDS, decay(np.full(10, 0.2)))}  # exp(-7.8) = 4.1e-4 <= 1e-3
    row = claims.none_near_zero(near)
    assert row["verdict"] == "contradicted" and "rmsprop: 10/10 near zero" in row["numbers"]


def test_claims_table_rows():
    rng = np.random.default_rng(2)
    mse = {
        "sgd": (SEEDS, decay(0.3 + rng.uniform(0, 0.1, 10))),
        "momentum_sgd": (SEEDS, decay(0.3 + rng.uniform(0, 0.1, 10), wiggle=0.6)),
        "adam": (SEEDS, decay(0.3 + rng.uniform(0, 0.1, 10), wiggle=0.1)),
        "rmsprop": (SEEDS, decay(1.0 + rng.uniform(0, 0.1, 10))),
    }
    l1 = {name: (SEEDS, decay(np.full(10, 0.06))) for name in mse}
    table = claims.claims_table(mse, l1)
    assert list(table.columns) == claims.CLAIM_COLUMNS
    assert table["verdict"].tolist() == ["supported"] * 3
    assert table["data"].tolist() == ["mse", "mse", "l1"]
    with pytest.raises(ValueError, match="rmsprop"):
        claims.claims_table({"sgd": mse["sgd"]}, l1)


def test_fastest_among_three_needs_a_significant_win_over_every_other():
    """The verdict combines one comparison per rival: a significant win over one
    rival and a tie with another is "not shown", wins over both are "supported"."""
    rng = np.random.default_rng(3)
    fast = 1.0 + rng.uniform(0, 0.3, 10)
    slow = 0.3 + rng.uniform(0, 0.1, 10)
    tied = {
        "rmsprop": (SEEDS, decay(fast)),
        "sgd": (SEEDS, decay(slow)),
        "adam": (SEEDS, decay(fast)),  # the same steps on every seed: a tie
    }
    row = claims.fastest_to_near_zero(tied)
    assert row["verdict"] == "not shown"
    assert "vs sgd" in row["numbers"] and "vs adam" in row["numbers"]
    assert row["p_value"] == 1.0  # the tie's Holm-adjusted p, the largest
    beaten = tied | {"adam": (SEEDS, decay(slow / 2))}
    row = claims.fastest_to_near_zero(beaten)
    assert row["verdict"] == "supported"
    assert row["p_value"] < 0.05
    # One rival significantly faster decides "contradicted", whatever the others.
    faster_rival = tied | {"adam": (SEEDS, decay(fast * 3))}
    assert claims.fastest_to_near_zero(faster_rival)["verdict"] == "contradicted"


def test_none_near_zero_combines_every_optimizer():
    """Supported only when every optimizer stays away significantly; one optimizer at
    half of the seeds leaves it "not shown"."""
    far = decay(np.full(10, 0.06))  # 0.096 of the initial loss at the last step
    near = decay(np.full(10, 0.2))  # 4.1e-4: near zero
    half = np.vstack([far[:5], near[5:]])
    curves = {"sgd": (SEEDS, far), "adam": (SEEDS, far), "rmsprop": (SEEDS, far)}
    assert claims.none_near_zero(curves)["verdict"] == "supported"
    row = claims.none_near_zero(curves | {"rmsprop": (SEEDS, half)})
    assert row["verdict"] == "not shown"
    assert "rmsprop: 5/10 near zero" in row["numbers"]
    row = claims.none_near_zero(curves | {"adam": (SEEDS, near)})
    assert row["verdict"] == "contradicted"


# --- the claims rows on grids other than the default (issue 31, point 8) ---------------

ARTICLE_REASON = "has none of the article's optimizers (sgd, momentum_sgd, adam, rmsprop)"


def run_table(blocks, seeds=range(6), variant="base"):
    """The per-run metrics the claims read, for planted runs: ``blocks`` maps
    (problem, loss) -> {optimizer: (steps to threshold or None, final/initial loss)},
    the same on every seed (initial loss 1, threshold 1e-3, oscillation by name)."""
    rows = []
    for (problem, loss), optimizers in blocks.items():
        for index, (name, (steps, final)) in enumerate(optimizers.items()):
            for seed in seeds:
                rows.append(
                    {"problem": problem, "loss": loss, "optimizer": name, "variant": variant,
                     "seed": seed, "steps_to_threshold": np.nan if steps is None else steps,
                     "threshold": 1e-3, "final_loss": final, "initial_loss": 1.0,
                     "oscillation": 0.01 * (index + 1)}
                )  # fmt: skip
    return pd.DataFrame(rows)


def cells_text(table):
    return [str(value) for value in table.to_numpy().ravel()]


def test_a_grid_without_the_articles_problem_names_no_made_up_run_length():
    """No linear problem: the L1 claim has no run length to name. It read "in None
    steps" (the missing length formatted into the text)."""
    runs = run_table({("quadratic", "mse"): {"adam": (5, 1e-6), "sgd": (None, 0.1)}})
    table = claims.claims_from_runs(runs, None, None, None)
    assert not any("None" in text for text in cells_text(table))
    assert list(table["claim"]) == [
        "rmsprop brings the loss to about zero fastest",
        "adam damps oscillation faster than momentum_sgd",
        "no optimizer gets the loss near zero within the run",
    ]
    assert list(table["verdict"]) == [
        "not testable: the grid has no linear problem with an MSE loss",
        "not testable: the grid has no linear problem with an MSE loss",
        "not testable: the grid has no linear problem with an L1 loss",
    ]


def test_a_linear_mse_block_of_other_optimizers_says_the_articles_are_missing():
    """configs/your-optimizers.yaml has linear with MSE, but none of the article's four
    optimizers: the reason is those, not the problem (it said "the grid has no linear
    problem with an MSE loss")."""
    runs = run_table(
        {("linear", "mse"): {"adamw": (5, 1e-6), "lion": (9, 1e-5)},
         ("linear", "l1"): {"adamw": (None, 0.1), "lion": (None, 0.2)}}
    )  # fmt: skip
    table = claims.claims_from_runs(runs, ("linear", "mse"), ("linear", "l1"), 40)
    assert list(table["verdict"]) == [
        f"not testable: linear/mse {ARTICLE_REASON}; the claims are about those",
        f"not testable: linear/mse {ARTICLE_REASON}; the claims are about those",
        f"not testable: linear/l1 {ARTICLE_REASON}; the claims are about those",
    ]
    assert list(table["data"]) == ["linear/mse", "linear/mse", "linear/l1"]
    assert table["claim"].iloc[2] == "no optimizer gets the loss near zero in 40 steps"
    # With them in, the same blocks are tested (the other optimizers left out).
    runs = run_table(
        {("linear", "mse"): {"adamw": (1, 1e-9), "rmsprop": (5, 1e-6), "sgd": (9, 1e-5)}}
    )
    table = claims.claims_from_runs(runs, ("linear", "mse"), None, None)
    assert table["verdict"].iloc[0] == "supported"  # 6 of 6 seeds faster: sign test p 1/32
    assert "adamw" not in table["numbers"].iloc[0]
    assert table["verdict"].iloc[1] == "not testable: needs adam and momentum_sgd"


def test_the_l1_claim_names_the_run_length_of_the_l1_problem():
    """MSE and L1 on two linear entries of different lengths: the L1 claim is about the
    L1 runs, so it names their length (it took the first linear entry's)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["problems"] = {
        "short": {"problem": "linear", "kwargs": {"dim": 20}, "steps": 40, "losses": ["mse"]},
        "long": {"problem": "linear", "kwargs": {"dim": 20}, "steps": 90, "losses": ["l1"]},
    }
    context = context_for(settings.validate(config, SCHEMA))
    assert (context.mse_block, context.l1_block) == (("short", "mse"), ("long", "l1"))
    assert context.claims_steps == 90
    config["problems"] = {"short": config["problems"]["short"]}
    context = context_for(settings.validate(config, SCHEMA))
    assert (context.l1_block, context.claims_steps) == (None, None)


def test_each_claim_is_listed_once_per_set_of_runs():
    """The re-check on the base variants repeats a claim only where it tests other runs:
    not for a claim the grid cannot test, nor where the article's optimizers ran their
    base variants anyway (another optimizer being tuned)."""
    linear = {("linear", "mse"): {"rmsprop": (5, 1e-6), "sgd": (9, 1e-5), "adam": (7, 1e-5),
                                  "momentum_sgd": (8, 1e-5)},
              ("linear", "l1"): {"rmsprop": (None, 0.1), "sgd": (None, 0.2)}}  # fmt: skip
    base = run_table(linear)
    # No linear problem: three rows, each claim once (they were listed twice).
    other = run_table({("quadratic", "mse"): {"adam": (5, 1e-6), "lion": (6, 1e-6)}})
    tuned_other = other.assign(variant=np.where(other["optimizer"] == "lion", "trial1", "base"))
    table = claims.article_claims(tuned_other, other, None, None, None)
    assert len(table) == 3 and table["claim"].is_unique
    # The article's optimizers at base, lbfgs tuned: their claims once.
    lbfgs = run_table({("linear", "mse"): {"lbfgs": (2, 1e-9)}}, variant="lr0.5")
    table = claims.article_claims(pd.concat([base, lbfgs]), base, *linear, 40)
    assert len(table) == 3 and table["claim"].is_unique
    assert list(table["data"]) == ["linear/mse", "linear/mse", "linear/l1"]
    # Tuning chose other variants for them: each claim also on the base variants.
    tuned = run_table(linear, variant="lr0.1")
    table = claims.article_claims(tuned, base, *linear, 40)
    assert list(table["data"]) == [
        "linear/mse", "linear/mse", "linear/l1",
        "linear/mse (base variants)", "linear/mse (base variants)", "linear/l1 (base variants)",
    ]  # fmt: skip
    assert table[["claim", "data"]].drop_duplicates().shape[0] == 6
    # Without adam and momentum_sgd the damping claim is not testable: said once.
    tuned = tuned[~tuned["optimizer"].isin(["adam", "momentum_sgd"])]
    table = claims.article_claims(tuned, base, *linear, 40)
    assert table["claim"].tolist().count("adam damps oscillation faster than momentum_sgd") == 1
    assert len(table) == 5
