"""Each optimizer against a baseline, paired by seed: speed-up with its interval, held-out test."""

import math

import numpy as np
import pandas as pd
import pytest

from conftest import SCHEMA
from optbench.planning import settings
from optbench.reporting import baseline


def test_the_speedup_is_the_ratio_of_median_steps():
    point, low, high = baseline.speedup([10, 20, 30, 40, 50], [5, 10, 15, 20, 25])
    assert point == 2.0
    # Every pair has the same ratio, so every resample of the pairs gives 2 exactly.
    assert (low, high) == (2.0, 2.0)
    point, low, high = baseline.speedup([10, 20, 30, 40, 50], [10, 5, 30, 10, 25])
    assert point == pytest.approx(30 / 10)
    assert low <= point <= high and low < high


def test_runs_that_never_reach_the_target_are_infinitely_slow():
    nan = math.nan
    assert baseline.speedup([nan, nan, nan], [4, 5, 6])[0] == math.inf
    assert baseline.speedup([4, 5, 6], [nan, nan, nan])[0] == 0.0
    assert math.isnan(baseline.speedup([nan, nan], [nan, nan])[0])
    # The median counts a censored run as slower than any: 2 of 3 reached at 10.
    assert baseline.speedup([20, 20, 20], [10, 10, nan])[0] == 2.0


def chosen(held_lower: float):
    """adamw (the baseline) and lion on one (problem, loss), ten seeds: lion takes
    half the steps; its held-out loss is adamw's minus ``held_lower``."""
    rows = []
    for seed in range(10):
        for optimizer, steps, held in (("adamw", 20 + seed, 1.0), ("lion", 10 + seed / 2, 1.0)):
            rows.append(
                {
                    "problem": "p",
                    "loss": "mse",
                    "optimizer": optimizer,
                    "seed": seed,
                    "steps_to_threshold": steps,
                    "steps_to_heldout_target": np.nan,
                    "heldout_target_loss": np.nan,
                    "heldout_target_accuracy": np.nan,
                    "heldout_loss": held + seed / 100 - (held_lower if optimizer == "lion" else 0),
                    # lion's steps cost three times adamw's
                    "seconds_per_step": 3e-3 if optimizer == "lion" else 1e-3,
                    "time_to_threshold": steps * (3e-3 if optimizer == "lion" else 1e-3),
                    "time_to_heldout_target": np.nan,
                }
            )
    return pd.DataFrame(rows)


def test_the_table_pairs_each_optimizer_with_the_baseline():
    table = baseline.baseline_table(chosen(0.1), "adamw")
    (row,) = table.itertuples()
    assert (row.optimizer, row.baseline, row.measure, row.n_pairs) == (
        "lion", "adamw", "steps_to_threshold", 10
    )  # fmt: skip
    assert row.speedup == pytest.approx(
        np.median(np.arange(10) + 20) / np.median(10 + np.arange(10) / 2)
    )
    assert row.speedup_low <= row.speedup <= row.speedup_high
    # Half the steps at three times the cost each: slower in time.
    assert row.step_time_ratio == pytest.approx(3.0)
    assert row.time_speedup == pytest.approx(row.speedup / 3)
    assert row.time_speedup_low <= row.time_speedup <= row.time_speedup_high
    assert row.heldout_verdict == "better" and row.heldout_median_diff == pytest.approx(-0.1)
    same = baseline.baseline_table(chosen(0.0), "adamw").iloc[0]
    assert same["heldout_verdict"] == "no difference"
    assert baseline.baseline_table(chosen(-0.1), "adamw").iloc[0]["heldout_verdict"] == "worse"
    assert baseline.baseline_table(chosen(0.1), None).empty
    assert list(baseline.baseline_table(chosen(0.1), "sgd").columns) == baseline.COLUMNS


def test_the_held_out_target_is_the_measure_where_the_pair_has_one():
    runs = chosen(0.1).assign(heldout_target_accuracy=0.9)
    runs["steps_to_heldout_target"] = np.where(runs["optimizer"] == "lion", 5.0, 20.0)
    (row,) = baseline.baseline_table(runs, "adamw").itertuples()
    assert row.measure == "steps_to_heldout_target" and row.speedup == 4.0


def test_the_baseline_must_be_a_configured_optimizer():
    with pytest.raises(
        settings.ConfigError, match="config key baseline: 'adamw' is not a configured"
    ):
        settings.validate({"baseline": "adamw"}, SCHEMA, memory_bytes=None)
    assert settings.validate({"baseline": "adam"}, SCHEMA, memory_bytes=None).baseline == "adam"
