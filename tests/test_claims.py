"""The article's claims checked on planted curves whose verdicts are known."""

import numpy as np
import pytest

from optbench.reporting import claims

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
