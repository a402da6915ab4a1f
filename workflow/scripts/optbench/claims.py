"""Checks of the reference article's testable claims on the evaluation seeds.

Each check takes ``curves``: optimizer -> (seeds, runs x steps loss array) for
one (problem, loss), pairs runs by seed (the seeds all named optimizers
share) and returns one row: ``claim``, ``data``, ``test``, ``statistic``,
``p_value``, ``numbers`` (the figures behind the verdict, as text) and
``verdict``: "supported", "contradicted" or "not shown" (the seeds separate
neither way at ``alpha`` after Holm correction).

Definitions:

- near zero: a loss at or below ``near_zero`` (default 1e-3) times the run's
  initial loss, i.e. a 99.9 % reduction;
- "X brings the error to about zero fastest": X's steps to near zero (never
  reached = +inf) are lower than each other optimizer's, paired by seed
  (``comparison.paired_test``, Holm across the others); supported when X
  wins every comparison significantly, contradicted when any other optimizer
  is significantly faster;
- "no optimizer gets near zero in T steps": per optimizer, the number of
  seeds whose last-step loss is near zero, with a one-sided exact binomial
  test that fewer than half of the seeds get there (Holm across optimizers);
  supported when that holds for every optimizer, contradicted when some
  optimizer gets there on significantly more than half of the seeds;
- oscillation: the upward variation of the loss over the second half of the
  run (the sum of the rises L[t+1] - L[t] > 0 for t >= T // 2), divided by
  the run's initial loss; a monotone decreasing curve scores 0, and the
  measure is on the linear scale the article plots, so float noise near 1e-15
  does not count. "A damps oscillation faster than B": A's oscillation is
  lower than B's, paired by seed; a diverged run scores +inf.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from optbench.comparison import ALPHA, holm, paired_test
from optbench.runmetrics import oscillation, run_metrics  # noqa: F401  (re-exported)
from optbench.statistics import mask_diverged

NEAR_ZERO = 1e-3
CLAIM_COLUMNS = ["claim", "data", "test", "statistic", "p_value", "numbers", "verdict"]


def _aligned(curves, names) -> tuple[list, dict[str, np.ndarray]]:
    missing = [name for name in names if name not in curves]
    if missing:
        raise ValueError(
            f"claims check needs optimizer(s) {', '.join(missing)}; have {', '.join(curves)}"
        )
    common = set.intersection(*(set(curves[name][0]) for name in names))
    seeds = sorted(common)
    if not seeds:
        raise ValueError(f"optimizers {', '.join(names)} share no seed to pair on")
    arrays = {}
    for name in names:
        position = {seed: i for i, seed in enumerate(curves[name][0])}
        array = np.asarray(curves[name][1], dtype=np.float64)
        arrays[name] = array[[position[seed] for seed in seeds]]
    return seeds, arrays


def _steps_to_near_zero(losses, near_zero: float) -> np.ndarray:
    steps = run_metrics(losses, threshold=near_zero).steps_to_threshold.to_numpy()
    return np.where(np.isnan(steps), np.inf, steps)


def _median_text(values: np.ndarray) -> str:
    median = np.median(values)
    return "not reached (median)" if np.isinf(median) else f"median {median:g} steps"


def fastest_to_near_zero(
    curves, optimizer: str = "rmsprop", data: str = "", near_zero=NEAR_ZERO, alpha=ALPHA
) -> dict:
    names = [optimizer, *(name for name in curves if name != optimizer)]
    seeds, arrays = _aligned(curves, names)
    steps = {name: _steps_to_near_zero(arrays[name], near_zero) for name in names}
    others = names[1:]
    tests = [paired_test(steps[optimizer], steps[other]) for other in others]
    adjusted = holm([t["p_value"] for t in tests])
    wins = [t["better"] == "a" and p < alpha for t, p in zip(tests, adjusted, strict=True)]
    losses = [t["better"] == "b" and p < alpha for t, p in zip(tests, adjusted, strict=True)]
    verdict = "supported" if all(wins) else "contradicted" if any(losses) else "not shown"
    parts = [
        f"{name}: {_median_text(steps[name])}, "
        f"{int(np.isfinite(steps[name]).sum())}/{len(seeds)} reached"
        for name in names
    ]
    parts += [
        f"vs {other}: {t['test']}, p_holm={p:.3g}, P({optimizer} faster)={t['p_a_better']:.2f}"
        for other, t, p in zip(others, tests, adjusted, strict=True)
    ]
    return {
        "claim": f"{optimizer} brings the loss to about zero fastest",
        "data": data,
        "test": f"steps to {near_zero:g} x initial loss, paired by seed vs each other "
        "optimizer (Wilcoxon signed-rank or sign test), Holm",
        "statistic": float(np.median(steps[optimizer])),
        "p_value": float(np.nanmax(adjusted)) if len(adjusted) else np.nan,
        "numbers": "; ".join(parts),
        "verdict": verdict,
    }


def none_near_zero(curves, data: str = "", near_zero=NEAR_ZERO, alpha=ALPHA) -> dict:
    names = list(curves)
    seeds, arrays = _aligned(curves, names)
    reached, below, above, parts = {}, [], [], []
    for name in names:
        alive = mask_diverged(arrays[name])
        relative = alive[:, -1] / arrays[name][:, 0]
        reached[name] = int((relative <= near_zero).sum())
        below.append(stats.binomtest(reached[name], len(seeds), 0.5, "less").pvalue)
        above.append(stats.binomtest(reached[name], len(seeds), 0.5, "greater").pvalue)
        with np.errstate(invalid="ignore"):
            parts.append(
                f"{name}: {reached[name]}/{len(seeds)} near zero, median final/initial "
                f"{np.nanmedian(relative):.3g}"
            )
    below_adjusted, above_adjusted = holm(below), holm(above)
    if (below_adjusted < alpha).all():
        verdict = "supported"
    elif (above_adjusted < alpha).any():
        verdict = "contradicted"
    else:
        verdict = "not shown"
    steps = next(iter(arrays.values())).shape[1]
    return {
        "claim": f"no optimizer gets the loss near zero in {steps} steps",
        "data": data,
        "test": f"last-step loss <= {near_zero:g} x initial; one-sided exact binomial test "
        "that fewer than half of the seeds get there, per optimizer, Holm",
        "statistic": float(max(reached.values()) / len(seeds)),
        "p_value": float(below_adjusted.max()),
        "numbers": "; ".join(parts),
        "verdict": verdict,
    }


def damps_faster(
    curves, optimizer: str = "adam", other: str = "momentum_sgd", data: str = "", alpha=ALPHA
) -> dict:
    seeds, arrays = _aligned(curves, [optimizer, other])
    a, b = oscillation(arrays[optimizer]), oscillation(arrays[other])
    test = paired_test(a, b)
    p = test["p_value"]
    if test["better"] == "a" and p < alpha:
        verdict = "supported"
    elif test["better"] == "b" and p < alpha:
        verdict = "contradicted"
    else:
        verdict = "not shown"
    numbers = (
        f"median oscillation {optimizer} {np.median(a):.3g}, {other} {np.median(b):.3g} "
        f"(x initial loss); {optimizer} lower on {test['p_a_better'] * len(seeds):g} of "
        f"{len(seeds)} seeds; rank-biserial {test['rank_biserial']:.2f}"
    )
    return {
        "claim": f"{optimizer} damps oscillation faster than {other}",
        "data": data,
        "test": "upward loss variation over the second half / initial loss, paired by seed, "
        f"{test['test']}",
        "statistic": test["rank_biserial"],
        "p_value": p,
        "numbers": numbers,
        "verdict": verdict,
    }


def claims_table(
    mse_curves,
    l1_curves,
    fastest: str = "rmsprop",
    damped: tuple[str, str] = ("adam", "momentum_sgd"),
    near_zero: float = NEAR_ZERO,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """The article's three testable claims on the reference problem's MSE and L1 runs."""
    rows = [
        fastest_to_near_zero(mse_curves, fastest, "mse", near_zero, alpha),
        damps_faster(mse_curves, *damped, data="mse", alpha=alpha),
        none_near_zero(l1_curves, "l1", near_zero, alpha),
    ]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
