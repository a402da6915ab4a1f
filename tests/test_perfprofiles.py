"""Performance profiles and the AlgoPerf-style score on a hand-made cost table."""

import numpy as np
import pandas as pd
import pytest

from optbench.reporting import perfprofiles


@pytest.fixture
def costs():
    # ratios: p1 (1, 2, 5); p2 (inf, 1, 1); p3 nobody reached it (all inf)
    return pd.DataFrame(
        {"A": [10.0, np.inf, np.inf], "B": [20.0, 30.0, np.inf], "C": [50.0, 30.0, np.inf]},
        index=["p1", "p2", "p3"],
    )


def test_ratios_and_profile_by_hand(costs):
    ratios = perfprofiles.performance_ratios(costs)
    assert ratios.to_numpy().tolist() == [
        [1.0, 2.0, 5.0],
        [np.inf, 1.0, 1.0],
        [np.inf, np.inf, np.inf],
    ]
    assert perfprofiles.profile_taus(ratios).tolist() == [1.0, 2.0, 4.0]  # 5 > r_max
    rho = perfprofiles.performance_profile(ratios, [1.0, 1.99, 2.0, 4.0, 5.0, 1e9])
    third = 1 / 3
    assert rho["A"].tolist() == pytest.approx([third] * 6)
    assert rho["B"].tolist() == pytest.approx(
        [third, third, 2 * third, 2 * third, 2 * third, 2 * third]
    )
    assert rho["C"].tolist() == pytest.approx([third, third, third, third, 2 * third, 2 * third])


def test_score_by_hand_and_by_numerical_integration(costs):
    ratios = perfprofiles.performance_ratios(costs)
    score = perfprofiles.profile_score(ratios)
    # B_s = mean over blocks of max(0, 4 - r) / 3
    assert score["A"] == pytest.approx((3 / 3 + 0 + 0) / 3)
    assert score["B"] == pytest.approx((2 / 3 + 3 / 3 + 0) / 3)
    assert score["C"] == pytest.approx((0 + 3 / 3 + 0) / 3)
    # midpoint rule on the profile itself: independent of the closed form
    taus = 1 + (np.arange(300_000) + 0.5) * 3 / 300_000
    rho = perfprofiles.performance_profile(ratios, taus)
    assert rho.mean(axis=0).to_numpy() == pytest.approx(score.to_numpy(), abs=1e-4)


def test_block_costs_take_the_median_with_censored_runs_as_infinite():
    runs = pd.DataFrame(
        {
            "problem": ["p"] * 6,
            "loss": ["mse"] * 6,
            "optimizer": ["a", "a", "a", "b", "b", "b"],
            "steps_to_threshold": [3, np.nan, 5, np.nan, np.nan, 4],
        }
    )
    table = perfprofiles.block_costs(runs)
    assert table.loc[("p", "mse")].to_dict() == {"a": 5.0, "b": np.inf}


def test_incomplete_or_zero_costs_are_refused(costs):
    with pytest.raises(ValueError, match="'B'.*every optimizer"):
        perfprofiles.performance_ratios(costs.assign(B=[1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="positive"):
        perfprofiles.performance_ratios(costs.assign(B=[0.0, 1.0, 2.0]))
