"""Two published findings about scale, checked on the size and budget axes.

Rows have the claims table's columns (``claims.CLAIM_COLUMNS``); a claim the
grid cannot test says why ("not testable: ..."). Wen, Hall, Ma and Liang,
"Fantastic Pretraining Optimizers and Where to Find Them" (2025):

1. The speed-up of matrix-based optimizers (Muon, SOAP: class names holding
   "muon" or "soap") over a tuned AdamW (the ``baseline``, an Adam-family
   class) decreases with model size. Per family, loss, matrix optimizer and
   budget: the matched-loss speed-up (``scaling``) at the smallest size
   against the largest, d = log speed-up(smallest) - log speed-up(largest),
   with a percentile bootstrap over seeds drawn once for both sizes (runs of
   one seed share their seed at every size); a censored resample keeps its
   bound direction (0 or inf), and an undetermined d (both censored the same
   way) counts against the direction tested. One-sided p-values ((count + 1)
   / (resamples + 1) of resamples with d <= 0, resp. >= 0), Holm across the
   tests: supported when the speed-up shrinks significantly in every test,
   contradicted when it grows significantly in some, else not shown; where
   Muon and SOAP differ, the verdict adds each one's by the same rule on its
   own tests, e.g. "not shown: supported for muon, not shown for soap".
   Needs a size axis (2+ sizes), a budget axis (2+ budgets: the baseline's curve) and 6+ seeds.
2. Rankings read at intermediate checkpoints can differ from rankings at the
   end of training. Per family, loss, size and shorter budget b, each pair
   that flips in ``rank_flips.tsv`` is tested twice, paired by seed on log10
   held-out loss (``comparison.paired_test``): after b steps of the longest
   budget's runs (their held-out curve) and at the end of the b-step runs;
   Holm across all these tests. Supported when some pair's order is
   significant both ways (a confirmed flip), else not shown (a claim that
   rankings *can* differ is never contradicted by one grid). Needs a budget
   axis and held-out curves at the shorter budgets (``eval_every`` dividing
   them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optbench.reporting import intervals, scaling
from optbench.reporting.claims import CLAIM_COLUMNS
from optbench.reporting.comparison import ALPHA, holm, paired_test
from optbench.reporting.literature import adam_family
from optbench.reporting.ranking_metric import VALUE
from optbench.reporting.statistics import log10_or_inf

SHRINKS = (
    "the speed-up of matrix-based optimizers (Muon, SOAP) over tuned AdamW decreases with "
    "model size (Wen et al. 2025)"
)
FLIPS = (
    "rankings at intermediate checkpoints can differ from rankings at the end of training "
    "(Wen et al. 2025)"
)


def matrix_based(cls: str) -> bool:
    name = cls.rsplit(".", 1)[-1].lower()
    return "muon" in name or "soap" in name


def _row(claim, data, test, statistic, p_value, numbers, verdict) -> dict:
    return dict(
        zip(CLAIM_COLUMNS, (claim, data, test, statistic, p_value, numbers, verdict), strict=True)
    )


def _untestable(claim: str, reason: str) -> dict:
    return _row(claim, "", "", np.nan, np.nan, "", f"not testable: {reason}")


def _matched_ratios(budgets, base, values, budget, draws) -> tuple[np.ndarray, np.ndarray]:
    """Per resample (rows of ``draws``), the matched speed-up and its censoring code."""
    curves = scaling._log_median(base[:, draws])
    targets = scaling._log_median(values[draws])
    matched, codes = scaling.matched_budgets(budgets, curves, targets)
    return matched / budget, codes


def _bootstrap_ratios(budgets, base, values, budget, draws) -> np.ndarray:
    """Per resample (rows of ``draws``), the speed-up with censored ones at 0 / inf."""
    ratios, codes = _matched_ratios(budgets, base, values, budget, draws)
    return np.where(
        codes == scaling.AT_MOST, 0.0, np.where(codes == scaling.MORE_THAN, np.inf, ratios)
    )


def _point_text(budgets, base, values, budget) -> str:
    """The full-sample speed-up as the tables print it: "1.4x", "> 2x", "< 0.5x"."""
    everyone = np.arange(base.shape[1])[None, :]
    ratios, codes = _matched_ratios(budgets, base, values, budget, everyone)
    mark = scaling.CENSOR_TEXT[int(codes[0])]
    return f"{mark + ' ' if mark else ''}{ratios[0]:.3g}x"


def _one_sided_p(hits: np.ndarray) -> float:
    """Bootstrap p-value (count + 1) / (resamples + 1): never 0 from finitely many resamples."""
    return float((np.count_nonzero(hits) + 1) / (hits.size + 1))


def _verdicts_by_optimizer(optimizers, down, up) -> dict[str, str]:
    """Each matrix optimizer's own verdict, by the claim's rule on its tests alone."""
    verdicts = {}
    for name in dict.fromkeys(optimizers):
        mine = [i for i, o in enumerate(optimizers) if o == name]
        if all(down[i] < ALPHA for i in mine):
            verdicts[name] = "supported"
        elif any(up[i] < ALPHA for i in mine):
            verdicts[name] = "contradicted"
        else:
            verdicts[name] = "not shown"
    return verdicts


def speedup_shrinks(
    chosen: pd.DataFrame,
    context_scaling: dict,
    baseline: str | None,
    classes: dict[str, str],
    resamples: int = scaling.RESAMPLES,
) -> dict:
    """Finding 1 (module doc) on the tuned evaluation runs with ``ranking_value``."""
    members = scaling._members(context_scaling)
    if members.empty or members.groupby("family")["size"].nunique().max() < 2:
        return _untestable(SHRINKS, "the grid has no size axis (a problem entry with 2+ sizes:)")
    if members.groupby(["family", "size"])["budget"].nunique().max() < 2:
        return _untestable(
            SHRINKS, "the grid has no budget axis (2+ budgets: the baseline's loss-budget curve)"
        )
    if baseline is None or not adam_family(classes.get(baseline, "")):
        return _untestable(SHRINKS, "needs an Adam-family baseline (config key baseline: adamw)")
    matrix = [name for name, cls in classes.items() if matrix_based(cls)]
    if not matrix:
        return _untestable(SHRINKS, "the grid has no matrix-based optimizer (Muon, SOAP)")
    runs = chosen.merge(members, on="problem")
    seeds_needed = intervals.minimum_n()
    rng = np.random.default_rng(scaling.BOOTSTRAP_SEED)
    tests, tested, p_down, p_up, too_few, undetermined = [], [], [], [], [], []
    for (family, loss), block in runs.groupby(["family", "loss"], sort=False):
        sizes = list(dict.fromkeys(block.sort_values("parameters")["size"]))
        if len(sizes) < 2:
            continue
        ends = {}
        for size in (sizes[0], sizes[-1]):
            rows = block[block["size"] == size]
            order = rows.drop_duplicates("problem").sort_values("budget")
            ends[size] = (rows, list(order["problem"]), [int(b) for b in order["budget"]])
        seeds = sorted(set.intersection(*(set(rows["seed"]) for rows, _, _ in ends.values())))
        for optimizer in matrix:
            if optimizer not in set(block["optimizer"]) or baseline not in set(block["optimizer"]):
                continue
            if len(seeds) < seeds_needed:
                too_few.append(f"{family}/{loss}/{optimizer}: {len(seeds)} seeds")
                continue
            budget_sets = [set(budgets) for _, _, budgets in ends.values()]
            for budget in sorted(set.intersection(*budget_sets)):
                draws = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
                point, boot, text = [], [], []
                for rows, problems, budgets in ends.values():
                    base = scaling._seed_matrix(rows, problems, baseline, seeds)
                    values = scaling._seed_matrix(rows, problems, optimizer, seeds)
                    position = budgets.index(budget)
                    full = np.arange(len(seeds))[None, :]
                    point.append(
                        _bootstrap_ratios(budgets, base, values[position], budget, full)[0]
                    )
                    boot.append(_bootstrap_ratios(budgets, base, values[position], budget, draws))
                    text.append(_point_text(budgets, base, values[position], budget))
                with np.errstate(divide="ignore", invalid="ignore"):
                    d = np.log(boot[0]) - np.log(boot[1])
                    d_point = np.log(point[0]) - np.log(point[1])
                where = f"{family}/{loss}/{optimizer} at {budget} steps"
                if np.isnan(d_point):
                    # Censored the same way at both sizes: no direction to test.
                    undetermined.append(f"{where}: {text[0]} and {text[1]}")
                    continue
                p_down.append(_one_sided_p(~(d > 0)))  # NaN (undetermined) counts against
                p_up.append(_one_sided_p(~(d < 0)))
                # A censored end makes the log ratio a bound, not a value.
                ratio = (
                    f"{d_point:+.2f}" if np.isfinite(d_point) else ("> 0" if d_point > 0 else "< 0")
                )
                tested.append(optimizer)
                tests.append(
                    f"{where}: {text[0]} ({sizes[0]}) -> {text[1]} ({sizes[-1]}), log ratio {ratio}"
                )
    if not tests:
        reason = (
            f"fewer than {seeds_needed} evaluation seeds ({'; '.join(too_few)})"
            if too_few
            else "the speed-up is censored the same way at both sizes at every budget "
            f"({'; '.join(undetermined)}): widen the budgets"
            if undetermined
            else f"no family has runs of {baseline} and a matrix-based optimizer at two sizes"
        )
        return _untestable(SHRINKS, reason)
    down, up = holm(p_down), holm(p_up)
    by_optimizer = _verdicts_by_optimizer(tested, down, up)
    if all(p < ALPHA for p in down):
        verdict = "supported"
    elif any(p < ALPHA for p in up):
        verdict = "contradicted"
    else:
        verdict = "not shown"
    if len(set(by_optimizer.values())) > 1:
        # The claim names two optimizers: say for which one it holds.
        verdict += ": " + ", ".join(f"{v} for {o}" for o, v in by_optimizer.items())
    numbers = "; ".join(
        f"{text} (Holm p {p:.3g} shrinks, {q:.3g} grows)"
        for text, p, q in zip(tests, down, up, strict=True)
    ) + (f"; not tested, censored at both sizes: {'; '.join(undetermined)}" if undetermined else "")
    return _row(
        SHRINKS,
        f"{len(tests)} tests (family, loss, optimizer, budget), smallest vs largest size, "
        "evaluation seeds",
        f"matched-loss speed-up, bootstrap over seeds ({resamples} resamples) of the log "
        "ratio smallest/largest size, one-sided, Holm across the tests",
        float(max(down)),
        float(max(down)),
        numbers,
        verdict,
    )


def rankings_flip(
    chosen: pd.DataFrame,
    flips: pd.DataFrame,
    context_scaling: dict,
    curves: pd.DataFrame | None,
) -> dict:
    """Finding 2 (module doc) on the rank-flip table, the chosen runs and the curves."""
    if flips.empty:
        return _untestable(FLIPS, "the grid has no budget axis (a problem entry with 2+ budgets:)")
    if curves is None or curves.empty:
        return _untestable(
            FLIPS,
            "no held-out curves (set eval_every to a divisor of the shorter budgets, on a "
            "problem with held-out data)",
        )
    members = scaling._members(context_scaling)
    runs = chosen.merge(members, on="problem")
    tests, p_values = [], []
    for row in flips.itertuples(index=False):
        if not row.flipped_pairs:
            continue
        block = runs[(runs["family"] == row.family) & (runs["loss"] == row.loss)]
        block = block[block["size"] == row.size]
        longest = block.loc[block["budget"] == row.longest_budget, "problem"].iloc[0]
        shorter = block.loc[block["budget"] == row.budget, "problem"].iloc[0]
        here = curves[
            (curves["problem"] == longest)
            & (curves["loss"] == row.loss)
            & (curves["step"] == row.budget)
        ]
        for pair in row.flipped_pairs.split("; "):
            a, b = pair.split("/")
            mid = here.pivot_table(index="seed", columns="optimizer", values="heldout_loss")
            end = block[block["problem"] == shorter].pivot_table(
                index="seed", columns="optimizer", values=VALUE
            )
            if not {a, b} <= set(mid.columns) or not {a, b} <= set(end.columns):
                continue
            mid, end = mid.reindex(columns=[a, b]), end.reindex(columns=[a, b])
            seeds = mid.index.intersection(end.index)
            early = paired_test(*(log10_or_inf(mid.loc[seeds, c].to_numpy(float)) for c in (a, b)))
            late = paired_test(*(log10_or_inf(end.loc[seeds, c].to_numpy(float)) for c in (a, b)))
            p_values += [early["p_value"], late["p_value"]]
            opposite = {early["better"], late["better"]} == {"a", "b"}
            tests.append(
                (
                    f"{row.family}/{row.loss}/{row.size or '-'} at {row.budget} of "
                    f"{row.longest_budget} steps: {a} vs {b} mid-run "
                    f"{early['median_diff']:+.2f}, at the end {late['median_diff']:+.2f} "
                    f"decades ({len(seeds)} seeds)",
                    opposite,
                )
            )
    n_rows = len(flips)
    if not tests:
        return _row(
            FLIPS,
            f"{n_rows} (family, loss, size, budget) comparisons",
            "Kendall's tau mid-run vs end of own run; paired tests on flipped pairs",
            float(flips["kendall_tau"].min()),
            np.nan,
            f"no pair flipped its order (smallest tau {flips['kendall_tau'].min():.2f})",
            "not shown",
        )
    adjusted = holm(p_values)
    confirmed = [
        text
        for (text, opposite), p_mid, p_end in zip(tests, adjusted[::2], adjusted[1::2], strict=True)
        if opposite and p_mid < ALPHA and p_end < ALPHA
    ]
    numbers = (
        f"{len(tests)} flipped pairs, {len(confirmed)} significant both mid-run and at the end "
        "(Holm): " + "; ".join(text for text, _ in tests)
    )
    return _row(
        FLIPS,
        f"{n_rows} (family, loss, size, budget) comparisons, evaluation seeds",
        "per flipped pair, paired tests on log10 held-out loss mid-run and at the end, "
        "Holm across all",
        float(flips["kendall_tau"].min()),
        float(np.nanmin(adjusted)),
        numbers,
        "supported" if confirmed else "not shown",
    )


def scaling_claims(chosen, flips, context_scaling, baseline, classes, curves) -> pd.DataFrame:
    """Both findings' rows, in the claims table's columns."""
    rows = [
        speedup_shrinks(chosen, context_scaling, baseline, classes),
        rankings_flip(chosen, flips, context_scaling, curves),
    ]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
