"""Each optimizer against a baseline optimizer (config ``baseline``), paired by seed.

Per (problem, loss) and optimizer, on the evaluation seeds of the tuned
variants (the baseline tuned the same way):

- the speed-up over the baseline in steps to the target: the held-out target
  where the pair has one (``steps_to_heldout_target``), else the loss
  threshold (``steps_to_threshold``), column ``measure``. Speed-up = the
  baseline's median steps / the optimizer's, a run that never reached the
  target counting as infinitely slow (censored): inf when only the baseline
  never gets there in the median, 0 when only the optimizer does, NaN when
  neither does. Its 95 % interval is a percentile bootstrap over the paired
  seeds (the seeds resampled together, so each resample keeps the pairs);
- the same in time: ``step_time_ratio`` is the optimizer's median seconds
  per step over the baseline's (each measured alone in the loop,
  engines/timing.py), ``time_speedup`` the speed-up in time to the target
  (steps times the step time), with its bootstrap interval;
- whether its final held-out loss is lower than the baseline's: the paired
  test of ``comparison.paired_test`` (median difference, p-value), said as
  ``better``, ``worse`` or ``no difference`` at the 5 % level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optbench.reporting.comparison import ALPHA, BOOTSTRAP_SEED, N_RESAMPLES, paired_test

COLUMNS = [
    "problem",
    "loss",
    "optimizer",
    "baseline",
    "measure",
    "n_pairs",
    "baseline_median_steps",
    "median_steps",
    "speedup",
    "speedup_low",
    "speedup_high",
    "step_time_ratio",
    "time_speedup",
    "time_speedup_low",
    "time_speedup_high",
    "heldout_median_diff",
    "heldout_p_value",
    "heldout_verdict",
]


def _ratio(baseline, steps):
    """Speed-up of medians, NaN-free inputs (inf = never reached)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            np.isinf(baseline) & np.isinf(steps),
            np.nan,
            np.where(np.isinf(steps), 0.0, np.where(np.isinf(baseline), np.inf, baseline / steps)),
        )
    return ratio


def speedup(baseline_steps, steps, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """(speed-up, low, high) of seed-aligned step counts (NaN = never reached)."""
    baseline = np.nan_to_num(np.asarray(baseline_steps, dtype=float), nan=np.inf)
    steps = np.nan_to_num(np.asarray(steps, dtype=float), nan=np.inf)
    if baseline.size == 0:
        return np.nan, np.nan, np.nan
    point = float(_ratio(np.median(baseline), np.median(steps)))
    rows = np.random.default_rng(seed).integers(0, baseline.size, (n_resamples, baseline.size))
    ratios = _ratio(np.median(baseline[rows], axis=1), np.median(steps[rows], axis=1))
    ratios = ratios[~np.isnan(ratios)]
    if ratios.size == 0:
        return point, np.nan, np.nan
    # Order statistics, not interpolation: the bounds may be 0 or inf.
    low, high = np.quantile(ratios, [0.025, 0.975], method="inverted_cdf")
    return point, float(low), float(high)


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
        targeted = (
            block["heldout_target_loss"].notna() | block["heldout_target_accuracy"].notna()
        ).any()
        measure = "steps_to_heldout_target" if targeted else "steps_to_threshold"
        in_time = "time_to_heldout_target" if targeted else "time_to_threshold"
        reference = block[block["optimizer"] == baseline].set_index("seed")
        if reference.empty:
            continue
        for optimizer, runs in block.groupby("optimizer", sort=False):
            if optimizer == baseline:
                continue
            runs = runs.set_index("seed")
            seeds = runs.index.intersection(reference.index).sort_values()
            point, low, high = speedup(reference.loc[seeds, measure], runs.loc[seeds, measure])
            timed = speedup(reference.loc[seeds, in_time], runs.loc[seeds, in_time])
            with np.errstate(divide="ignore", invalid="ignore"):
                step_ratio = float(
                    runs.loc[seeds, "seconds_per_step"].median()
                    / reference.loc[seeds, "seconds_per_step"].median()
                )
            test = paired_test(
                runs.loc[seeds, "heldout_loss"].to_numpy(float),
                reference.loc[seeds, "heldout_loss"].to_numpy(float),
            )
            held = test["n_pairs"] and runs.loc[seeds, "heldout_loss"].notna().all()
            rows.append(
                {
                    "problem": problem,
                    "loss": loss,
                    "optimizer": optimizer,
                    "baseline": baseline,
                    "measure": measure,
                    "n_pairs": len(seeds),
                    "baseline_median_steps": float(
                        reference.loc[seeds, measure].fillna(np.inf).median()
                    ),
                    "median_steps": float(runs.loc[seeds, measure].fillna(np.inf).median()),
                    "speedup": point,
                    "speedup_low": low,
                    "speedup_high": high,
                    "step_time_ratio": step_ratio,
                    "time_speedup": timed[0],
                    "time_speedup_low": timed[1],
                    "time_speedup_high": timed[2],
                    "heldout_median_diff": test["median_diff"] if held else np.nan,
                    "heldout_p_value": test["p_value"] if held else np.nan,
                    "heldout_verdict": _verdict(test) if held else "no held-out data",
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)
