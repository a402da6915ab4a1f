"""Each optimizer against a baseline optimizer (config ``baseline``), paired by seed.

Per (problem, loss) and optimizer, on the evaluation seeds of the tuned
variants (the baseline tuned the same way):

- the speed-up over the baseline in steps to the target: the held-out target
  where the pair has one (``steps_to_heldout_target``), else the loss
  threshold (``steps_to_threshold``), column ``measure``. Speed-up = the
  median over the shared seeds of the per-seed ratio baseline steps /
  optimizer steps (on a log scale: for an even count the geometric mean of the
  two middle ratios), a run that never reached the target counting as
  infinitely slow (censored): +inf on a seed where only the baseline missed
  it, 0 where only the optimizer did, unknown where neither did. Its exact 95 %
  order-statistic interval and the method (``speedup_ci_method``: the
  coverage, "n too small" with NaN bounds below 6 pairs, "not estimable"
  with a NaN speed-up when the seeds where neither reached the target decide
  the median) come from ``intervals.speedup_interval``. ``n_reached`` and
  ``baseline_n_reached`` count the runs that reached the target;
- the same in time: ``step_time_ratio`` is the optimizer's median seconds
  per step over the baseline's (each measured alone in the loop,
  engines/timing.py), ``time_speedup`` the speed-up in time to the target
  (per seed: steps times the run's step time), with its interval and method
  (NaN, "no step timing", where a run has no measured step time);
- whether its final held-out loss is lower than the baseline's: the paired
  test of ``comparison.paired_test`` (median difference, p-value), said as
  ``better``, ``worse`` or ``no difference`` at the 5 % level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optbench.reporting.comparison import ALPHA, paired_test
from optbench.reporting.intervals import speedup_interval

COLUMNS = [
    "problem",
    "loss",
    "optimizer",
    "baseline",
    "measure",
    "n_pairs",
    "baseline_n_reached",
    "n_reached",
    "baseline_median_steps",
    "median_steps",
    "speedup",
    "speedup_low",
    "speedup_high",
    "speedup_ci_method",
    "step_time_ratio",
    "time_speedup",
    "time_speedup_low",
    "time_speedup_high",
    "time_speedup_ci_method",
    "heldout_median_diff",
    "heldout_p_value",
    "heldout_verdict",
]


def _never_reached_as_inf(values) -> np.ndarray:
    """Steps (or seconds) to a target with NaN, never reached, as +inf: slower than any."""
    return np.nan_to_num(np.asarray(values, dtype=float), nan=np.inf)


def _median_steps(values) -> float:
    values = _never_reached_as_inf(values)
    return float(np.median(values)) if values.size else np.nan


def speedup(baseline_steps, steps):
    """(speed-up, low, high, method) of seed-aligned step counts (NaN = never reached)."""
    return speedup_interval(_never_reached_as_inf(baseline_steps), _never_reached_as_inf(steps))


def time_speedup(baseline_steps, baseline_seconds, steps, seconds):
    """``speedup`` in time to the target: each run's steps times its seconds per step."""
    seconds = np.asarray(seconds, dtype=float)
    baseline_seconds = np.asarray(baseline_seconds, dtype=float)
    if np.isnan(seconds).any() or np.isnan(baseline_seconds).any():
        # A run without a measured step time is missing, not slow: no number.
        return np.nan, np.nan, np.nan, "no step timing"
    return speedup_interval(
        _never_reached_as_inf(baseline_steps) * baseline_seconds,
        _never_reached_as_inf(steps) * seconds,
    )


def _check_one_run_per_seed(block: pd.DataFrame) -> None:
    duplicated = block.duplicated(["optimizer", "seed"])
    if duplicated.any():
        first = block[duplicated].iloc[0]
        raise ValueError(
            "the baseline table pairs runs by seed and needs one run per (problem, loss, "
            f"optimizer, seed); {first['problem']}/{first['loss']}/{first['optimizer']} seed "
            f"{first['seed']} appears more than once. Pass the evaluation runs of the chosen "
            "variants only (selection.tuned_evaluation_runs)."
        )


def _verdict(test: dict) -> str:
    if not np.isfinite(test["p_value"]) or test["p_value"] >= ALPHA:
        return "no difference"
    return "better" if test["median_diff"] < 0 else "worse"


def baseline_table(chosen: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """The table of the module docstring (empty without a baseline in the runs)."""
    if not baseline or chosen.empty or baseline not in set(chosen["optimizer"]):
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for (problem, loss), block in chosen.groupby(["problem", "loss"], sort=False):
        _check_one_run_per_seed(block)
        targeted = (
            block["heldout_target_loss"].notna() | block["heldout_target_accuracy"].notna()
        ).any()
        measure = "steps_to_heldout_target" if targeted else "steps_to_threshold"
        reference = block[block["optimizer"] == baseline].set_index("seed")
        if reference.empty:
            continue
        for optimizer, runs in block.groupby("optimizer", sort=False):
            if optimizer == baseline:
                continue
            runs = runs.set_index("seed")
            seeds = runs.index.intersection(reference.index).sort_values()
            # Everything below reads both sides at the same ``seeds``: pairs by seed, never by row.
            mine, theirs = runs.loc[seeds], reference.loc[seeds]
            point, low, high, method = speedup(theirs[measure], mine[measure])
            timed = time_speedup(
                theirs[measure], theirs["seconds_per_step"], mine[measure], mine["seconds_per_step"]
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                step_ratio = float(
                    mine["seconds_per_step"].median() / theirs["seconds_per_step"].median()
                )
            test = paired_test(
                mine["heldout_loss"].to_numpy(float), theirs["heldout_loss"].to_numpy(float)
            )
            held = test["n_pairs"] and mine["heldout_loss"].notna().all()
            rows.append(
                {
                    "problem": problem,
                    "loss": loss,
                    "optimizer": optimizer,
                    "baseline": baseline,
                    "measure": measure,
                    "n_pairs": len(seeds),
                    "baseline_n_reached": int(theirs[measure].notna().sum()),
                    "n_reached": int(mine[measure].notna().sum()),
                    "baseline_median_steps": float(
                        np.median(_never_reached_as_inf(theirs[measure]))
                    ),
                    "median_steps": _median_steps(mine[measure]),
                    "speedup": point,
                    "speedup_low": low,
                    "speedup_high": high,
                    "speedup_ci_method": method,
                    "step_time_ratio": step_ratio,
                    "time_speedup": timed[0],
                    "time_speedup_low": timed[1],
                    "time_speedup_high": timed[2],
                    "time_speedup_ci_method": timed[3],
                    "heldout_median_diff": test["median_diff"] if held else np.nan,
                    "heldout_p_value": test["p_value"] if held else np.nan,
                    "heldout_verdict": _verdict(test) if held else "no held-out data",
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)
