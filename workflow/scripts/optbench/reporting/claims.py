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

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from optbench.reporting.comparison import ALPHA, holm, paired_test
from optbench.reporting.runmetrics import oscillation, run_metrics  # noqa: F401  (re-exported)
from optbench.reporting.statistics import mask_diverged

NEAR_ZERO = 1e-3
# The article's optimizers, by their names in config.yaml.
ARTICLE_OPTIMIZERS = ("sgd", "momentum_sgd", "adam", "rmsprop")
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
    return _fastest(steps, len(seeds), optimizer, data, f"{near_zero:g} x initial loss", alpha)


def _fastest(steps: dict, n_seeds: int, optimizer: str, data: str, level: str, alpha) -> dict:
    """``steps``: optimizer -> seed-aligned steps to the level (+inf: never), claimed one first."""
    names = list(steps)
    others = names[1:]
    tests = [paired_test(steps[optimizer], steps[other]) for other in others]
    adjusted = holm([t["p_value"] for t in tests])
    wins = [t["better"] == "a" and p < alpha for t, p in zip(tests, adjusted, strict=True)]
    losses = [t["better"] == "b" and p < alpha for t, p in zip(tests, adjusted, strict=True)]
    verdict = "supported" if all(wins) else "contradicted" if any(losses) else "not shown"
    parts = [
        f"{name}: {_median_text(steps[name])}, "
        f"{int(np.isfinite(steps[name]).sum())}/{n_seeds} reached"
        for name in names
    ]
    parts += [
        f"vs {other}: {t['test']}, p_holm={p:.3g}, P({optimizer} faster)={t['p_a_better']:.2f}"
        for other, t, p in zip(others, tests, adjusted, strict=True)
    ]
    return {
        "claim": f"{optimizer} brings the loss to about zero fastest",
        "data": data,
        "test": f"steps to {level}, paired by seed vs each other "
        "optimizer (Wilcoxon signed-rank or sign test), Holm",
        "statistic": float(np.median(steps[optimizer])),
        "p_value": float(np.nanmax(adjusted)) if len(adjusted) else np.nan,
        "numbers": "; ".join(parts),
        "verdict": verdict,
    }


def none_near_zero(curves, data: str = "", near_zero=NEAR_ZERO, alpha=ALPHA) -> dict:
    names = list(curves)
    seeds, arrays = _aligned(curves, names)
    relative, near = {}, {}
    for name in names:
        alive = mask_diverged(arrays[name])
        relative[name] = alive[:, -1] / arrays[name][:, 0]
        near[name] = relative[name] <= near_zero
    steps = next(iter(arrays.values())).shape[1]
    return _none(relative, near, len(seeds), steps, data, f"{near_zero:g} x initial", alpha)


def _none(relative: dict, near: dict, n_seeds: int, steps: int, data: str, level: str, alpha):
    """``near``: optimizer -> per seed, whether the last-step loss is at the level;
    ``relative``: the last-step loss over the initial one (for the numbers)."""
    reached, below, above, parts = {}, [], [], []
    for name in near:
        reached[name] = int(np.sum(near[name]))
        below.append(stats.binomtest(reached[name], n_seeds, 0.5, "less").pvalue)
        above.append(stats.binomtest(reached[name], n_seeds, 0.5, "greater").pvalue)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # every run diverged
            parts.append(
                f"{name}: {reached[name]}/{n_seeds} near zero, median final/initial "
                f"{np.nanmedian(relative[name]):.3g}"
            )
    below_adjusted, above_adjusted = holm(below), holm(above)
    if (below_adjusted < alpha).all():
        verdict = "supported"
    elif (above_adjusted < alpha).any():
        verdict = "contradicted"
    else:
        verdict = "not shown"
    return {
        "claim": none_claim_text(steps),
        "data": data,
        "test": f"last-step loss <= {level}; one-sided exact binomial test "
        "that fewer than half of the seeds get there, per optimizer, Holm",
        "statistic": float(max(reached.values()) / n_seeds),
        "p_value": float(below_adjusted.max()),
        "numbers": "; ".join(parts),
        "verdict": verdict,
    }


def damps_faster(
    curves, optimizer: str = "adam", other: str = "momentum_sgd", data: str = "", alpha=ALPHA
) -> dict:
    seeds, arrays = _aligned(curves, [optimizer, other])
    a, b = oscillation(arrays[optimizer]), oscillation(arrays[other])
    return _damps(a, b, optimizer, other, len(seeds), data, alpha)


def _damps(a, b, optimizer: str, other: str, n_seeds: int, data: str, alpha) -> dict:
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
        f"(x initial loss); {optimizer} lower on {test['p_a_better'] * n_seeds:g} of "
        f"{n_seeds} seeds; rank-biserial {test['rank_biserial']:.2f}"
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


def _untestable(claim: str, data: str, reason: str) -> dict:
    return dict.fromkeys(CLAIM_COLUMNS, np.nan) | {
        "claim": claim,
        "data": data,
        "test": "",
        "numbers": "",
        "verdict": f"not testable: {reason}",
    }


def _block(runs: pd.DataFrame, block, names=None):
    """(seeds, optimizer -> rows by seed) for one (problem, loss), on the seeds all share."""
    rows = runs[(runs["problem"] == block[0]) & (runs["loss"] == block[1])]
    by_name = {
        name: group.set_index("seed") for name, group in rows.groupby("optimizer", sort=False)
    }
    names = list(by_name) if names is None else names
    shared = sorted(set.intersection(*(set(by_name[name].index) for name in names)))
    return shared, {name: by_name[name].loc[shared] for name in names}


def none_claim_text(steps: int | None) -> str:
    """The L1 claim's wording; ``steps``: the L1 problem's run length (None: unknown,
    e.g. the grid has no such problem, so no number is made up)."""
    within = "within the run" if steps is None else f"in {steps} steps"
    return f"no optimizer gets the loss near zero {within}"


def _missing_reason(all_runs: pd.DataFrame, block, loss_name: str, among) -> str | None:
    """Why ``block`` gives the article's claims no runs (None: it does)."""
    if block is None:
        return f"the grid has no linear problem with an {loss_name} loss"
    rows = all_runs[(all_runs["problem"] == block[0]) & (all_runs["loss"] == block[1])]
    if rows.empty:
        return f"no evaluation runs of {block[0]}/{block[1]}"
    if among is not None and not rows["optimizer"].isin(list(among)).any():
        return (
            f"{block[0]}/{block[1]} has none of the article's optimizers "
            f"({', '.join(among)}); the claims are about those"
        )
    return None


def claims_from_runs(
    runs: pd.DataFrame,
    mse_block=None,
    l1_block=None,
    steps=None,
    fastest: str = "rmsprop",
    damped: tuple[str, str] = ("adam", "momentum_sgd"),
    alpha: float = ALPHA,
    label: str = "",
    among=ARTICLE_OPTIMIZERS,
) -> pd.DataFrame:
    """The three claims from the per-run metrics table (evaluation seeds, one variant
    per optimizer): ``steps_to_threshold``, ``threshold``, ``final_loss`` (NaN when
    diverged), ``initial_loss`` and ``oscillation`` of each run.

    "Near zero" is the run's threshold (``threshold``; by default 1e-3 x its
    initial loss, the ``NEAR_ZERO`` of the curve-based checks). ``mse_block`` and
    ``l1_block`` are the (problem, loss) of the article's linear problem with MSE
    and L1 (None: not in the grid); ``steps``: the L1 problem's run length (None:
    unknown; the claim then names no number). A claim whose data or optimizers
    are missing gets a row "not testable: why", the why being the first thing
    missing: the problem and loss, then their runs, then the article's
    optimizers among them. The claims are the article's about its own
    optimizers: only the optimizers named in ``among`` (None: every one) take part.
    """
    all_runs = runs
    if among is not None:
        runs = runs[runs["optimizer"].isin(list(among))]
    rows = []
    fastest_claim = f"{fastest} brings the loss to about zero fastest"
    damped_claim = f"{damped[0]} damps oscillation faster than {damped[1]}"
    none_claim = none_claim_text(steps)
    data = {
        name: f"{block[0]}/{block[1]}{label}" if block else ""
        for name, block in (("mse", mse_block), ("l1", l1_block))
    }

    reason = _missing_reason(all_runs, mse_block, "MSE", among)
    if reason is not None:
        rows += [
            _untestable(fastest_claim, data["mse"], reason),
            _untestable(damped_claim, data["mse"], reason),
        ]
    else:
        rows_of = runs[(runs["problem"] == mse_block[0]) & (runs["loss"] == mse_block[1])]
        names = list(dict.fromkeys(rows_of["optimizer"]))
        if fastest not in names or len(names) < 2:
            rows.append(
                _untestable(fastest_claim, data["mse"], f"needs {fastest} and another optimizer")
            )
        else:
            order = [fastest, *(name for name in names if name != fastest)]
            seeds, block = _block(runs, mse_block, order)
            level = _level_text(block[fastest])
            steps_to = {
                name: block[name]["steps_to_threshold"].fillna(np.inf).to_numpy(np.float64)
                for name in order
            }
            rows.append(_fastest(steps_to, len(seeds), fastest, data["mse"], level, alpha))
        if not set(damped) <= set(names):
            rows.append(
                _untestable(damped_claim, data["mse"], f"needs {damped[0]} and {damped[1]}")
            )
        else:
            seeds, block = _block(runs, mse_block, list(damped))
            a, b = (block[name]["oscillation"].to_numpy(np.float64) for name in damped)
            rows.append(_damps(a, b, *damped, len(seeds), data["mse"], alpha))
    reason = _missing_reason(all_runs, l1_block, "L1", among)
    if reason is not None:
        rows.append(_untestable(none_claim, data["l1"], reason))
    else:
        seeds, block = _block(runs, l1_block)
        relative, near = {}, {}
        for name, table in block.items():
            final = table["final_loss"].to_numpy(np.float64)
            relative[name] = final / table["initial_loss"].to_numpy(np.float64)
            with np.errstate(invalid="ignore"):
                near[name] = final <= table["threshold"].to_numpy(np.float64)
        level = _level_text(next(iter(block.values())))
        rows.append(_none(relative, near, len(seeds), steps, data["l1"], level, alpha))
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


BASE_LABEL = " (base variants)"


def article_claims(
    chosen: pd.DataFrame,
    base_runs: pd.DataFrame,
    mse_block=None,
    l1_block=None,
    steps=None,
    alpha: float = ALPHA,
    among=ARTICLE_OPTIMIZERS,
    base_variant: str = "base",
) -> pd.DataFrame:
    """The claims rows of the report: each claim on the runs tuning chose, then
    again on the configured (base) variants, each claim once per set of runs.

    ``chosen``: the evaluation runs of the chosen variants; ``base_runs``: the
    evaluation runs of the base variants. A claim is re-checked on the base
    variants only where its tuned row was testable and tuning chose another
    variant for one of the article's optimizers on its (problem, loss): a
    re-check of the same runs, or of a claim the grid cannot test, would only
    repeat a row.
    """
    rows = claims_from_runs(chosen, mse_block, l1_block, steps, alpha=alpha, among=among)
    if base_runs is None or base_runs.empty:
        return rows
    again = claims_from_runs(
        base_runs, mse_block, l1_block, steps, alpha=alpha, label=BASE_LABEL, among=among
    )
    tuned_blocks = set()
    for block in (mse_block, l1_block):
        if block is None:
            continue
        of_block = chosen[(chosen["problem"] == block[0]) & (chosen["loss"] == block[1])]
        if among is not None:
            of_block = of_block[of_block["optimizer"].isin(list(among))]
        if (of_block["variant"] != base_variant).any():
            tuned_blocks.add(block)
    # Claims in claims_from_runs' order: two on the MSE block, one on the L1 block.
    blocks = [mse_block, mse_block, l1_block]
    keep = [
        block in tuned_blocks and not str(verdict).startswith("not testable")
        for block, verdict in zip(blocks, rows["verdict"], strict=True)
    ]
    return pd.concat([rows, again[keep]], ignore_index=True)


def _level_text(table: pd.DataFrame) -> str:
    ratio = table["threshold"].to_numpy(np.float64) / table["initial_loss"].to_numpy(np.float64)
    if ratio.size and np.allclose(ratio, ratio[0], rtol=1e-9):
        return f"the threshold ({ratio[0]:.3g} x initial loss)"
    return "the threshold (absolute)"
