"""Each optimizer against a baseline, paired by seed: speed-up with its interval, held-out test."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import SCHEMA
from optbench.planning import settings
from optbench.reporting import baseline

INF, NAN = math.inf, math.nan


def test_the_speedup_is_the_median_per_seed_ratio_with_an_exact_interval():
    # per-seed ratios 1, 4, 1, 4, 2, 3: the middle two are 2 and 3, their geometric
    # mean (a log-scale median) sqrt(6); six pairs give the interval [min, max]
    # (P(Binomial(6, 1/2) = 0) = 1/64 <= 0.025 < 7/64)
    point, low, high, method = baseline.speedup([10, 20, 30, 40, 50, 60], [10, 5, 30, 10, 25, 20])
    assert point == pytest.approx(math.sqrt(6)) and (low, high) == (1.0, 4.0)
    assert method == "exact order statistics x(1), x(6) of 6 per-seed ratios: coverage >= 96.9 %"


@pytest.mark.parametrize("n", [3, 5])
def test_too_few_seeds_give_no_interval(n):
    # The "1.67x faster [1.25, 3.5]" from 3 seeds: no 95 % interval exists.
    steps = np.array([10.0, 20.0, 30.0, 40.0, 50.0])[:n]
    point, low, high, method = baseline.speedup(steps, steps * 0.6)
    assert point == pytest.approx(1 / 0.6)
    assert math.isnan(low) and math.isnan(high)
    assert method == (f"n too small: no exact 95 % interval from {n} value(s) (needs >= 6)")


def test_runs_that_never_reach_the_target_are_infinitely_slow():
    six = [4, 5, 6, 7, 8, 9]
    assert baseline.speedup([NAN] * 6, six)[:3] == (INF, INF, INF)
    assert baseline.speedup(six, [NAN] * 6)[:3] == (0.0, 0.0, 0.0)
    # baseline missed on seed 0, the optimizer on seed 9: ratios inf, 2..9, 0;
    # median sqrt(5 * 6), interval [x(2), x(9)] of ten = [2, 9]
    point, low, high, method = baseline.speedup(
        [NAN, 20, 30, 40, 50, 60, 70, 80, 90, 100], [10] * 9 + [NAN]
    )
    assert point == pytest.approx(math.sqrt(30)) and (low, high) == (2.0, 9.0)
    assert method.startswith("exact order statistics x(2), x(9) of 10 per-seed ratios")


def test_seeds_where_neither_reaches_the_target_are_unknown_never_dropped():
    # The planted case: dropping the undefined resamples gave [inf, inf].
    # Per seed: 30/20, then inf/30, inf/40, inf/50 (only the baseline missed),
    # then six seeds where both missed: ratio unknown, 0 to inf.
    baseline_steps = [30] + [NAN] * 9
    steps = [20, 30, 40, 50] + [NAN] * 6
    point, low, high, method = baseline.speedup(baseline_steps, steps)
    # With the unknown ratios at 0 the median is 0, at inf it is inf: not estimable.
    assert math.isnan(point)
    assert method.startswith(
        "not estimable: neither reached the target on 6 of 10 seeds, so the median lies "
        "anywhere in [0, inf]; exact order statistics x(2), x(9) of 10 per-seed ratios"
    )
    # low end: x(2) of [0 x 6, 1.5, inf x 3] = 0; high end: x(9) of [1.5, inf x 9] = inf
    assert (low, high) == (0.0, INF)
    # Both never reach it on every seed: nothing known at all.
    point, low, high, method = baseline.speedup([NAN] * 8, [NAN] * 8)
    assert math.isnan(point) and (low, high) == (0.0, INF)
    assert method.startswith("not estimable: neither reached the target on 8 of 8 seeds")
    # Two unknown seeds of ten: the median is sqrt(4 * 5) with them at 0 and
    # sqrt(6 * 7) with them at inf, so it is only bounded; the interval widens.
    point, low, high, method = baseline.speedup(
        [NAN, NAN, 20, 30, 40, 50, 60, 70, 80, 90], [NAN, NAN] + [10] * 8
    )
    assert math.isnan(point)
    assert "the median lies anywhere in [4.47, 6.48]" in method
    assert (low, high) == (0.0, INF)  # x(2) of [0, 0, 2..9]; x(9) of [2..9, inf, inf]
    # Where they cannot move it (the middle values tie), the median stands.
    point, low, high, method = baseline.speedup([NAN] + [40] * 6, [NAN] + [10] * 6)
    assert (point, low, high) == (4.0, 0.0, INF)  # x(1), x(7) of seven
    assert method.endswith("; neither reached the target on 1 of 7 seeds (ratio 0 to inf)")
    # Each missed the target on the seeds where the other reached it: the middle
    # ratios are 0 and inf, and no speed-up (the mean of the two: inf) is honest.
    point, low, high, method = baseline.speedup([NAN] * 5 + [10] * 5, [10] * 5 + [NAN] * 5)
    assert math.isnan(point) and (low, high) == (0.0, INF)
    assert method.startswith("not estimable: the two middle per-seed ratios are 0 and inf")


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


# Pairing by seed (issue 38 item 2). Per seed s: adamw takes BASE[s] steps, lion
# BASE[s] / RATIO[s] (so the speed-up of seed s is RATIO[s]), held-out losses
# HELD_ADAMW[s] and HELD_LION[s]. Ratios and held-out gaps differ from seed to
# seed, so pairing the wrong runs changes every number.
BASE = {s: 40.0 + 10 * s for s in range(10)}
RATIO = {0: 1.2, 1: 3.0, 2: 1.6, 3: 2.6, 4: 1.0, 5: 2.2, 6: 1.4, 7: 2.8, 8: 1.8, 9: 2.4}
HELD_ADAMW = {s: 1.0 + 0.1 * s for s in range(10)}
HELD_LION = {s: HELD_ADAMW[s] - 0.01 * (s + 1) * (-1) ** (s % 3 == 0) for s in range(10)}


def seeded_runs(adamw_seeds, lion_seeds):
    """adamw and lion runs with those seeds, rows in the order given."""
    rows = []
    for optimizer, seeds in (("adamw", adamw_seeds), ("lion", lion_seeds)):
        for s in seeds:
            steps = BASE[s] if optimizer == "adamw" else BASE[s] / RATIO[s]
            rows.append(
                {
                    "problem": "p",
                    "loss": "mse",
                    "optimizer": optimizer,
                    "seed": s,
                    "steps_to_threshold": steps,
                    "steps_to_heldout_target": np.nan,
                    "heldout_target_loss": np.nan,
                    "heldout_target_accuracy": np.nan,
                    "heldout_loss": HELD_ADAMW[s] if optimizer == "adamw" else HELD_LION[s],
                    "seconds_per_step": 1e-3 if optimizer == "adamw" else 2e-3,
                    "time_to_threshold": np.nan,  # not read: time = steps x step time
                    "time_to_heldout_target": np.nan,
                }
            )
    return pd.DataFrame(rows)


def log_median(values):
    """The middle value, or the geometric mean of the two middle ones."""
    ordered, n = sorted(values), len(values)
    return math.sqrt(ordered[(n - 1) // 2] * ordered[n // 2])


def by_hand(shared):
    """The row's numbers from the correctly paired seeds ``shared``, by hand."""
    ratios = sorted(RATIO[s] for s in shared)
    n = len(ratios)
    # l: the largest rank with P(Binomial(n, 1/2) <= l - 1) <= 0.025 (9 pairs: 2; 10 pairs: 2)
    lower = {9: 2, 10: 2}[n]
    held = [HELD_LION[s] - HELD_ADAMW[s] for s in shared]
    return {
        "n_pairs": n,
        "speedup": log_median(ratios),
        "speedup_low": ratios[lower - 1],
        "speedup_high": ratios[n - lower],
        # lion's steps cost twice adamw's
        "time_speedup": log_median(ratios) / 2,
        "time_speedup_low": ratios[lower - 1] / 2,
        "time_speedup_high": ratios[n - lower] / 2,
        "baseline_median_steps": float(np.median([BASE[s] for s in shared])),
        "median_steps": float(np.median([BASE[s] / RATIO[s] for s in shared])),
        "heldout_median_diff": float(np.median(held)),
        "heldout_p_value": float(stats.wilcoxon(held, method="exact").pvalue),
    }


@pytest.mark.parametrize(
    ("adamw_seeds", "lion_seeds", "shared"),
    [
        # lion is missing seed 3 (e.g. its run file was deleted)
        (list(range(10)), [0, 1, 2, 4, 5, 6, 7, 8, 9], [0, 1, 2, 4, 5, 6, 7, 8, 9]),
        # the baseline is missing seed 0
        (list(range(1, 10)), list(range(10)), list(range(1, 10))),
        # every seed on both sides, lion's rows in another order (a merge of results)
        (list(range(10)), [7, 2, 9, 0, 5, 1, 8, 3, 6, 4], list(range(10))),
        # both reordered, one seed missing on each side
        (
            [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
            [0, 2, 3, 4, 5, 6, 7, 8, 9][::-1],
            [2, 3, 4, 5, 6, 7, 8, 9, 0],
        ),
    ],
)
def test_speedups_pair_runs_by_seed_not_by_position(adamw_seeds, lion_seeds, shared):
    table = baseline.baseline_table(seeded_runs(adamw_seeds, lion_seeds), "adamw")
    (row,) = table.to_dict("records")
    expected = by_hand(sorted(shared))
    assert {key: row[key] for key in expected} == pytest.approx(expected, rel=1e-12)
    assert row["n_reached"] == row["baseline_n_reached"] == len(shared)
    assert row["speedup_ci_method"].startswith(
        f"exact order statistics x(2), x({len(shared) - 1}) of {len(shared)} per-seed ratios"
    )


def test_a_seed_twice_for_one_optimizer_is_refused():
    runs = seeded_runs(list(range(10)), [0, 1, 2, 2, 3])
    with pytest.raises(ValueError, match=r"p/mse/lion seed 2 appears more than once"):
        baseline.baseline_table(runs, "adamw")


def test_a_missing_step_time_is_not_a_censored_run():
    runs = seeded_runs(list(range(10)), list(range(10)))
    runs.loc[runs["optimizer"] == "lion", "seconds_per_step"] = np.nan
    (row,) = baseline.baseline_table(runs, "adamw").to_dict("records")
    assert math.isnan(row["time_speedup"]) and row["time_speedup_ci_method"] == "no step timing"
    assert row["speedup"] == pytest.approx(log_median(RATIO.values()))
