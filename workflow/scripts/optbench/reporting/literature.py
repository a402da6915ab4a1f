"""Two published findings, checked on the grid's runs beside the article's claims.

Rows have the claims table's columns (``claims.CLAIM_COLUMNS``), and a claim
the grid cannot test says why ("not testable: ...").

1. Sivaprasad et al., "Optimizer benchmarking needs to account for
   hyperparameter tuning" (ICML 2020): at small tuning budgets an Adam-family
   optimizer is the most practical choice. For each budget k = 1..4 trials
   (the expected best after k random trials, ``selection.at_budgets``), each
   (problem, loss) pair is a block: the best Adam-family optimizer (class
   name containing "adam", e.g. Adam, AdamW, NAdam, RAdam, Adamax) against the
   best other one, on the expected evaluation-seed log10 final loss. A sign
   test across the blocks per k (ties dropped), one-sided each way, Holm
   across the budgets: supported when the Adam family wins significantly at
   every budget, contradicted when the others do at some budget.
2. Schmidt, Schneider and Hennig, "Descending through a crowded valley"
   (ICML 2021): trying several optimizers at their default settings does
   about as well as tuning one. Per block: "several at defaults" is the base
   variant chosen among all optimizers on the tuning seeds; "tuning one" is
   the tuned variant of the reference optimizer (config ``baseline``, else
   the first optimizer with candidates to tune); their final log10 losses are
   paired by evaluation seed (``comparison.paired_test``: median difference
   with its exact order-statistic 95 % interval; none below 6 seeds, where
   the block is unclear). "About as well" is read as
   non-inferiority, the usual test of an "as good as" claim: the interval's
   upper end at most ``MARGIN`` decades (defaults no more than that worse).
   Supported when that holds in every block, contradicted when some block's
   interval lies wholly above +``MARGIN`` (the defaults clearly worse), else
   not shown. Defaults that do far better than the tuned optimizer (interval
   wholly below -``MARGIN``) support it too, and are counted in the numbers:
   they say the tuned optimizer's budget or space was the weaker choice.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from optbench.reporting.claims import CLAIM_COLUMNS
from optbench.reporting.comparison import ALPHA, holm, paired_test
from optbench.reporting.statistics import FLOOR, log10_or_inf

BUDGETS = (1, 2, 3, 4)
MARGIN = 0.5  # decades of final loss that "about as well" allows
SIVAPRASAD = "at small tuning budgets (1-4 trials) an Adam-family optimizer does best"
SCHMIDT = "trying several optimizers at their defaults does about as well as tuning one"


def adam_family(cls: str) -> bool:
    return "adam" in cls.rsplit(".", 1)[-1].lower()


def _row(claim, data, test, statistic, p_value, numbers, verdict) -> dict:
    return dict(
        zip(CLAIM_COLUMNS, (claim, data, test, statistic, p_value, numbers, verdict), strict=True)
    )


def _untestable(claim: str, reason: str) -> dict:
    return _row(claim, "", "", np.nan, np.nan, "", f"not testable: {reason}")


def small_budgets(curve: pd.DataFrame, classes: dict[str, str]) -> dict:
    """Finding 1 on the ``best_of_k`` table (``selection.at_budgets``)."""
    adam = {name for name, cls in classes.items() if adam_family(cls)}
    if curve.empty or curve["n_candidates"].max() <= 1:
        return _untestable(SIVAPRASAD, "nothing is tuned (every optimizer has one candidate)")
    present = set(curve["optimizer"])
    if not present & adam or not present - adam:
        return _untestable(SIVAPRASAD, "needs an Adam-family optimizer and another one")
    # Only the budgets the grid has: a budget with no candidates to draw (k above
    # every optimizer's count) is no evidence, and a p of 1 for it would still
    # raise Holm's multiplier for the budgets that are there.
    budgets = [k for k in BUDGETS if k <= curve["k"].max()]
    counts, p_adam, p_other = [], [], []
    for k in budgets:
        at_k = curve[curve["k"] == k]
        wins = losses = 0
        for _, block in at_k.groupby(["problem", "loss"], sort=False):
            is_adam = block["optimizer"].isin(adam)
            if is_adam.all() or not is_adam.any():
                continue
            best_adam = block.loc[is_adam, "expected_log10"].min()
            best_other = block.loc[~is_adam, "expected_log10"].min()
            wins += best_adam < best_other
            losses += best_adam > best_other
        n = wins + losses
        counts.append((k, wins, losses))
        p_adam.append(stats.binomtest(wins, n, alternative="greater").pvalue if n else 1.0)
        p_other.append(stats.binomtest(losses, n, alternative="greater").pvalue if n else 1.0)
    adam_holm, other_holm = holm(p_adam), holm(p_other)
    if all(p < ALPHA for p in adam_holm):
        verdict = "supported"
    elif any(p < ALPHA for p in other_holm):
        verdict = "contradicted"
    else:
        verdict = "not shown"
    numbers = "; ".join(
        f"k={k}: Adam family best in {w}, another in {lo} of {w + lo} pairs "
        f"(Holm p {p:.3g} for the Adam family, {q:.3g} for the others)"
        for (k, w, lo), p, q in zip(counts, adam_holm, other_holm, strict=True)
    )
    return _row(
        SIVAPRASAD,
        f"{curve[['problem', 'loss']].drop_duplicates().shape[0]} (problem, loss) pairs",
        "sign test across pairs per budget, one-sided, Holm across budgets"
        + ("" if budgets == list(BUDGETS) else f" (the grid's budgets: k = 1..{budgets[-1]})"),
        float(max(adam_holm)),
        float(max(adam_holm)),
        numbers,
        verdict,
    )


def defaults_against_tuning(
    runs: pd.DataFrame, choice: pd.DataFrame, reference: str | None, floor: float = FLOOR
) -> dict:
    """Finding 2 on the per-run table (both roles, every variant) and the selection."""
    tuned_entries = choice[choice["n_candidates"] > 1]
    if tuned_entries.empty:
        return _untestable(SCHMIDT, "nothing is tuned (every optimizer has one candidate)")
    if reference is None or reference not in set(tuned_entries["optimizer"]):
        reference = tuned_entries["optimizer"].iloc[0]
    base = runs[runs["variant"] == "base"]
    if (base["role"] == "tuning").sum() == 0:
        return _untestable(SCHMIDT, "needs tuning seeds to choose among the defaults")
    score = base.assign(_score=log10_or_inf(base["final_loss"].to_numpy(float), floor))
    rows, verdicts = [], []
    for (problem, loss), block in score.groupby(["problem", "loss"], sort=False):
        tuning = block[block["role"] == "tuning"].groupby("optimizer")["_score"].median()
        chosen = choice[
            (choice["problem"] == problem)
            & (choice["loss"] == loss)
            & (choice["optimizer"] == reference)
        ]
        if tuning.empty or chosen.empty:
            continue
        default = tuning.idxmin()
        evaluation = runs[(runs["role"] == "evaluation") & (runs["problem"] == problem)]
        evaluation = evaluation[evaluation["loss"] == loss]
        at_default = evaluation[
            (evaluation["optimizer"] == default) & (evaluation["variant"] == "base")
        ].set_index("seed")["final_loss"]
        tuned = evaluation[
            (evaluation["optimizer"] == reference)
            & (evaluation["variant"] == chosen["variant"].iloc[0])
        ].set_index("seed")["final_loss"]
        seeds = at_default.index.intersection(tuned.index).sort_values()
        if not len(seeds):
            continue
        test = paired_test(
            log10_or_inf(at_default[seeds].to_numpy(float), floor),
            log10_or_inf(tuned[seeds].to_numpy(float), floor),
        )
        low, high = test["ci_low"], test["ci_high"]
        if high < -MARGIN:
            verdicts.append("better")
        elif high <= MARGIN:
            verdicts.append("as well")
        else:
            verdicts.append("worse" if low > MARGIN else "unclear")
        interval = "[no interval: n too small]" if np.isnan(high) else f"[{low:+.2f}, {high:+.2f}]"
        rows.append(
            f"{problem}/{loss}: {default} at defaults - tuned {reference} = "
            f"{test['median_diff']:+.2f} decades {interval}"
        )
    if not verdicts:
        return _untestable(SCHMIDT, f"no pair has runs of both the defaults and tuned {reference}")
    if all(v in ("as well", "better") for v in verdicts):
        verdict = "supported"
    elif "worse" in verdicts:
        verdict = "contradicted"
    else:
        verdict = "not shown"
    non_inferior = verdicts.count("as well") + verdicts.count("better")
    return _row(
        SCHMIDT,
        f"{len(verdicts)} (problem, loss) pairs, evaluation seeds",
        f"paired by seed, exact order-statistic 95 % interval of the median difference, "
        f"non-inferiority: at most {MARGIN} decades worse",
        float(np.nan),
        float(np.nan),
        f"defaults at most {MARGIN} decades worse in {non_inferior} of {len(verdicts)} pairs "
        f"(more than {MARGIN} decades better in {verdicts.count('better')}), clearly worse "
        f"in {verdicts.count('worse')}; " + "; ".join(rows),
        verdict,
    )


def literature_claims(curve, runs, choice, classes: dict[str, str], reference=None):
    """Both findings' rows, in the claims table's columns."""
    rows = [small_budgets(curve, classes), defaults_against_tuning(runs, choice, reference)]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)
