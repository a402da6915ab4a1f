"""The metric that selection and ranking judge by (config key ``ranking_metric``).

Every rank statistic (the variant choice on the tuning seeds, the paired
tests, ranks, win probabilities, Friedman, tuning gain, best of k) compares
one value per run, lower is better, on log10 (``statistics.log10_or_inf``),
with a diverged or censored run counting as +inf: worse than any finite run,
two of them tying. This module makes that value, column ``ranking_value``:

- ``final_loss``: the training loss at the last step (raised to its
  resolution floor; ``runmetrics``);
- ``heldout_loss``: the loss on the problem's held-out data after the last step;
- ``heldout_accuracy``: judged by the held-out error rate, 1 - accuracy (an
  error of 0 is raised to the floor on log10, like a loss of 0);
- ``steps_to_target`` / ``time_to_target``: steps (seconds) to the held-out
  target where the (problem, loss) has one (``heldout_targets``), else to the
  loss threshold (``thresholds``); a run that never got there is censored (+inf);
- ``auto`` (the default): ``heldout_loss`` where the (problem, loss) has
  held-out data, else ``final_loss``. On stochastic problems the last
  mini-batch loss is one noisy draw; the held-out loss is what a practitioner
  (and AlgoPerf) judges by.

A run whose training loss went non-finite is diverged whatever the metric
says (its held-out values come from broken weights): its value is NaN here,
+inf in every comparison. Whether a (problem, loss) "has held-out data" is
read from its runs: some run that did not diverge recorded a held-out loss.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optbench.reporting.statistics import require_columns

AUTO = "auto"
METRICS = (
    AUTO,
    "final_loss",
    "heldout_loss",
    "heldout_accuracy",
    "steps_to_target",
    "time_to_target",
)
VALUE = "ranking_value"
BLOCK = ["problem", "loss"]
HELDOUT = ("heldout_loss", "heldout_accuracy")


class MetricError(ValueError):
    """A ranking metric that a (problem, loss) cannot give; the message says the fix."""


def _has_heldout(block: pd.DataFrame) -> bool:
    alive = block["first_nonfinite_step"].isna()
    return bool(block.loc[alive, "heldout_loss"].notna().any())


def _has_target(block: pd.DataFrame) -> bool:
    return bool(
        (block["heldout_target_loss"].notna() | block["heldout_target_accuracy"].notna()).any()
    )


def resolve(block: pd.DataFrame, metric: str) -> str:
    """The concrete metric of one (problem, loss)'s runs: ``auto`` resolved;
    ``MetricError`` where the block cannot give ``metric``."""
    if metric not in METRICS:
        raise MetricError(f"ranking_metric {metric!r}: expected one of {', '.join(METRICS)}")
    where = "/".join(str(block[c].iloc[0]) for c in BLOCK) if len(block) else "?"
    if metric == AUTO:
        return "heldout_loss" if _has_heldout(block) else "final_loss"
    if metric in HELDOUT and not _has_heldout(block):
        raise MetricError(
            f"ranking_metric {metric}: {where} has no held-out data (its runs recorded no "
            "held-out loss). Fix: set ranking_metric to auto or final_loss, or use problems "
            "with a held-out split (docs/problems.md)."
        )
    if metric == "time_to_target" and block["seconds_per_step"].isna().all():
        raise MetricError(
            f"ranking_metric time_to_target: {where} has no step timing in its runs' "
            "sidecars (runs of an older version). Fix: delete those runs so that they are "
            "trained again, or set ranking_metric to steps_to_target."
        )
    return metric


def _values(block: pd.DataFrame, metric: str) -> pd.Series:
    if metric == "heldout_accuracy":
        return 1.0 - block["heldout_accuracy"]
    if metric in ("steps_to_target", "time_to_target"):
        kind = "steps" if metric == "steps_to_target" else "time"
        column = f"{kind}_to_heldout_target" if _has_target(block) else f"{kind}_to_threshold"
        # A cost of 0 (met before any update) has no log: one step of it.
        one = 1.0 if kind == "steps" else block["seconds_per_step"]
        values = block[column]
        return values.where(~(values <= 0), one)
    return block[metric]


def with_ranking_value(runs: pd.DataFrame, metric: str = AUTO) -> tuple[pd.DataFrame, dict]:
    """``runs`` with the column ``ranking_value`` (module doc; NaN: diverged or
    censored) and a dict (problem, loss) -> the metric used there."""
    require_columns(
        runs,
        [*BLOCK, "final_loss", "first_nonfinite_step", "heldout_loss", "heldout_accuracy"],
        "the ranking metric",
    )
    value = pd.Series(np.nan, index=runs.index, dtype=np.float64)
    used = {}
    for key, block in runs.groupby(BLOCK, sort=False):
        concrete = resolve(block, metric)
        used[key] = concrete
        value[block.index] = _values(block, concrete).to_numpy(np.float64)
    diverged = runs["first_nonfinite_step"].notna()
    value[diverged] = np.nan
    value[~np.isfinite(value)] = np.nan
    return runs.assign(**{VALUE: value}), used
