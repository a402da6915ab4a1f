"""Per-run metrics against a plain per-run loop and hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest

from optbench.reporting import runmetrics
from optbench.reporting.statistics import FLOOR


def loop_metrics(row, counts, threshold, relative, floor=FLOOR):
    """The definitions, one run at a time, written independently of the module;
    ``floor``: the run's resolution floor, to which every loss is raised."""
    first_bad = next((i for i, v in enumerate(row) if not math.isfinite(v)), None)
    usable = row if first_bad is None else row[:first_bad]
    level = threshold * row[0] if relative else threshold
    hit = next((i for i, v in enumerate(usable) if v <= level), None)
    return {
        "initial_loss": row[0],
        "final_loss": max(row[-1], floor) if first_bad is None else math.nan,
        "best_loss": max(min(usable), floor) if len(usable) else math.nan,
        "auc_log10": (
            sum(math.log10(max(v, floor, FLOOR)) for v in row) / len(row)
            if first_bad is None
            else math.nan
        ),
        "threshold": level,
        "steps_to_threshold": math.nan if hit is None else hit,
        "evaluations": sum(counts),
        "evaluations_to_threshold": math.nan if hit is None else sum(counts[:hit]) + 1,
        "first_nonfinite_step": math.nan if first_bad is None else first_bad,
        "resolution_floor": floor,
        "at_floor": float(first_bad is None and row[-1] <= floor),
    }


@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("resolution", [False, True])
def test_metrics_equal_a_per_run_loop(relative, resolution):
    rng = np.random.default_rng(7)
    losses = 10.0 ** -np.cumsum(rng.uniform(-0.2, 0.6, size=(30, 25)), axis=1)
    losses[3, 10:] = np.inf
    losses[4, 0] = np.nan
    losses[5, 7] = np.nan  # later values finite again: still diverged from step 7
    losses[6, -5:] = 0.0
    counts = rng.integers(1, 6, size=losses.shape)
    threshold = 1e-3 if relative else 1e-2
    # Floors proportional to the initial loss, as optbench.reporting.resolution makes them,
    # set high enough (1e6 float32 epsilon squared) that some curves end below.
    floors = np.float32(2.0**-23) ** 2 * np.abs(losses[:, 0]) * 1e6 if resolution else None
    table = runmetrics.run_metrics(
        losses, counts, threshold=threshold, relative=relative, resolution=floors
    )
    assert list(table.columns) == runmetrics.METRIC_COLUMNS
    expected = pd.DataFrame(
        [
            loop_metrics(list(r), list(c), threshold, relative, FLOOR if floors is None else f)
            for r, c, f in zip(losses, counts, floors if resolution else losses[:, 0], strict=True)
        ]
    )
    pd.testing.assert_frame_equal(table, expected[runmetrics.METRIC_COLUMNS], check_dtype=False)
    assert table["steps_to_threshold"].notna().sum() not in (0, 30)  # both cases occur
    if resolution:  # some runs end at the floor, some above it
        assert table["at_floor"].sum() not in (0, 30)


def test_hand_case_with_lbfgs_style_evaluation_counts():
    losses = np.array([[8.0, 4.0, 0.5, 0.004, 0.001], [2.0, 1.0, 0.5, 0.25, 0.2]])
    counts = np.array([[3, 5, 20, 2, 1], [1, 1, 1, 1, 1]])
    table = runmetrics.run_metrics(losses, counts, threshold=1e-3)
    first, second = table.iloc[0], table.iloc[1]
    # 8 * 1e-3 = 0.008: first reached at step 3, after 3 + 5 + 20 evaluations, seen by the 29th
    assert first["steps_to_threshold"] == 3 and first["evaluations_to_threshold"] == 29
    assert first["evaluations"] == 31 and first["best_loss"] == 0.001
    assert first["auc_log10"] == pytest.approx(np.log10([8.0, 4.0, 0.5, 0.004, 0.001]).mean())
    assert math.isnan(second["steps_to_threshold"])  # censored
    assert math.isnan(second["first_nonfinite_step"]) and second["final_loss"] == 0.2
    absolute = runmetrics.run_metrics(losses, threshold=0.5, relative=False)
    assert list(absolute["steps_to_threshold"]) == [2, 2]
    assert list(absolute["evaluations_to_threshold"]) == [3, 3]  # one evaluation per step


def test_threshold_share_counts_censored_runs():
    metrics = pd.DataFrame(
        {"optimizer": ["a", "a", "a", "b"], "steps_to_threshold": [3, np.nan, 5, np.nan]}
    )
    share = runmetrics.threshold_share(metrics, ["optimizer"])
    assert share.to_dict("list") == {
        "optimizer": ["a", "b"],
        "n": [3, 1],
        "n_reached": [2, 0],
        "share": [2 / 3, 0.0],
    }


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="runs x steps"):
        runmetrics.run_metrics(np.ones(4))
    with pytest.raises(ValueError, match="evaluations"):
        runmetrics.run_metrics(np.ones((2, 3)), np.ones((2, 2)))
