"""Choosing each optimizer's variant on the tuning seeds, and what tuning bought.

Criterion (``select_variants``): for each (problem, loss, optimizer), the
variant with the lowest median over its *tuning* seeds of the log10 ranking
value (``value``: the final loss by default; the pipeline passes the ranking
metric of ``optbench.reporting.ranking_metric``), a diverged run counting as
+inf (so a setting that diverges on most seeds is never chosen over one that
does not). Evaluation-seed runs are never
read, so the comparison on the evaluation seeds is free of selection bias.
Ties (equal medians, e.g. every candidate diverged) go to the preferred
variant: the one earliest in ``order`` (pass the variants from the smallest /
cheapest value up, e.g. ascending learning rate), or, without ``order``, the
earliest in the table.

Expected best after k trials (``expected_best_of_k``): a tuner that tries k
of the K candidates, drawn without replacement, keeps the one with the best
tuning score. With the candidates sorted by that score (ties in preference
order), the i-th (1-based) is kept with probability C(K - i, k - 1) / C(K, k):
it must be drawn and the other k - 1 must come from the K - i behind it. The
estimator is the expectation of the kept candidate's reported value (its
evaluation-seed median, or the tuning score itself) under those weights; k = K
gives the tuned result, k = 1 the average over candidates.

How sure (``best_of_k_intervals``): the estimate is random through the
seeds (the tuning seeds decide which candidate is kept, the evaluation seeds
what it reports), so its 95 % interval is a percentile bootstrap over seeds:
each resample draws the tuning seeds and the evaluation seeds with
replacement, the same seeds for every candidate (a seed is one run of each),
and recomputes the expected best of k. It estimates what a k-trial tuner with
this many tuning seeds gets, reported on this many evaluation seeds. On
planted candidates (tests/test_selection.py) it covered 93-99 % with 6 or more
evaluation seeds and 2 or more tuning seeds; with 3 evaluation seeds 74-91 %,
with 1 tuning seed down to 78 % past k = 1 (the resamples cannot vary the
choice): there the bounds are NaN and ``ci_method`` says "n too small".

At a budget of k trials (``at_budgets``), every optimizer of a (problem,
loss) is compared at the same k: one with K < k candidates has spent its
search, and keeps its k = K result (an optimizer with nothing to tune, such as
a learning-rate-free one, is at budget 1 throughout); ``rank`` orders them.

Edges (``range_edges``): a chosen value that is the lowest or the highest of
its hyper-parameter's tried values says the best setting may lie outside the
range: the range should be widened.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from optbench import grid
from optbench.reporting.comparison import paired_test
from optbench.reporting.statistics import FLOOR, log10_or_inf, log_summary_table, require_columns

# An entry: an optimizer on one (problem, loss) (grid.ENTRY_FIELDS).
ENTRY = list(grid.ENTRY_FIELDS)
TUNING, EVALUATION = "tuning", "evaluation"


def _scored(metrics: pd.DataFrame, floor: float, value: str = "final_loss") -> pd.DataFrame:
    require_columns(metrics, [*ENTRY, "variant", "seed", "role", value], "selection")
    unknown = set(metrics["role"]) - {TUNING, EVALUATION}
    if unknown:
        raise ValueError(f"role must be {TUNING!r} or {EVALUATION!r}, got {sorted(unknown)}")
    return metrics.assign(_score=log10_or_inf(metrics[value].to_numpy(np.float64), floor))


def _preference(metrics: pd.DataFrame, order) -> dict[str, int]:
    names = list(dict.fromkeys(metrics["variant"]))
    if order is None:
        return {name: i for i, name in enumerate(names)}
    position = {name: i for i, name in enumerate(order)}
    missing = [name for name in names if name not in position]
    if missing:
        raise ValueError(f"variant(s) {', '.join(missing)} are not in the preference order")
    return position


def variant_scores(
    metrics: pd.DataFrame,
    role: str = TUNING,
    order=None,
    floor: float = FLOOR,
    value: str = "final_loss",
) -> pd.DataFrame:
    """Per (problem, loss, optimizer, variant) on the seeds of ``role``:
    ``n_seeds``, ``n_diverged`` and ``score`` (median log10 ``value``,
    diverged = +inf), variants in preference order within each entry."""
    scored = _scored(metrics, floor, value)
    scored = scored[scored["role"] == role].assign(_diverged=lambda f: np.isinf(f["_score"]))
    preference = _preference(metrics, order)
    table = (
        scored.groupby([*ENTRY, "variant"], sort=False)
        .agg(
            n_seeds=("_score", "size"),
            n_diverged=("_diverged", "sum"),
            score=("_score", "median"),
        )
        .reset_index()
    )
    table["_preference"] = table["variant"].map(preference)
    table = table.sort_values([*ENTRY, "_preference"], kind="stable")
    return table.drop(columns="_preference").reset_index(drop=True)


def select_variants(
    metrics: pd.DataFrame, order=None, floor: float = FLOOR, value: str = "final_loss"
) -> pd.DataFrame:
    """Per (problem, loss, optimizer): the chosen ``variant``, its ``score``,
    ``n_candidates``, ``n_tied`` (candidates sharing the best score) and
    ``n_tuning_seeds``. An entry with one variant and no tuning seeds keeps that
    variant (nothing to tune; score NaN); several variants without tuning runs
    are an error."""
    scores = variant_scores(metrics, TUNING, order, floor, value)  # preference order per entry
    entries = scores.groupby(ENTRY, sort=False)
    best = entries["score"].transform("min")
    at_best = scores[scores["score"] == best]
    chosen = at_best.drop_duplicates(ENTRY).set_index(ENTRY)  # the preferred of the tied
    columns = ["variant", "score", "n_candidates", "n_tied", "n_tuning_seeds"]
    chosen = chosen.assign(
        n_candidates=entries.size(),
        n_tied=at_best.groupby(ENTRY, sort=False).size(),
        n_tuning_seeds=entries["n_seeds"].max(),
    )[columns]
    variants = metrics.groupby(ENTRY, sort=False)["variant"]
    all_entries = variants.first().index  # order of first appearance in the table
    untuned = all_entries.difference(chosen.index, sort=False)
    counts = variants.nunique()
    several = [entry for entry in untuned if counts[entry] > 1]
    if several:
        raise ValueError(
            f"{'/'.join(several[0])} has {counts[several[0]]} variants but no tuning-seed runs "
            "to choose between them: set tuning_seeds (disjoint from seeds)."
        )
    nothing_to_tune = pd.DataFrame(
        {"variant": variants.first()[untuned], "score": np.nan, "n_candidates": 1, "n_tied": 1},
        index=untuned,
    ).assign(n_tuning_seeds=0)
    table = pd.concat([chosen, nothing_to_tune[columns]]).reindex(all_entries)
    return table.reset_index().astype({"n_candidates": int, "n_tied": int, "n_tuning_seeds": int})


def tuned_evaluation_runs(metrics: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """The evaluation-seed rows of ``metrics`` that belong to the chosen variants."""
    require_columns(chosen, [*ENTRY, "variant"], "tuned_evaluation_runs")
    evaluation = metrics[metrics["role"] == EVALUATION]
    return evaluation.merge(chosen[[*ENTRY, "variant"]], on=[*ENTRY, "variant"]).reset_index(
        drop=True
    )


def candidate_counts(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, loss): the number of variants of each optimizer and whether
    they are all equal (``equal``), so that no optimizer gets more tuning effort."""
    require_columns(metrics, [*ENTRY, "variant"], "candidate_counts")
    counts = metrics.groupby(ENTRY, sort=False)["variant"].nunique().rename("n_variants")
    counts = counts.reset_index()
    counts["equal"] = counts.groupby(["problem", "loss"])["n_variants"].transform("nunique") == 1
    return counts


def sensitivity_table(metrics: pd.DataFrame, role: str = EVALUATION, floor: float = FLOOR):
    """Final loss of every variant (e.g. each swept learning rate) per
    optimizer, with the log-space statistics of ``statistics.log_describe``
    (geometric mean and t-interval, median and order-statistic interval)."""
    _scored(metrics, floor)
    rows = metrics[metrics["role"] == role]
    return log_summary_table(rows, [*ENTRY, "variant"], "final_loss", floor)


def tuning_gain(
    metrics: pd.DataFrame,
    chosen: pd.DataFrame,
    base,
    floor: float = FLOOR,
    value: str = "final_loss",
) -> pd.DataFrame:
    """One-shot (``base`` variant: a name, or a mapping optimizer -> name) beside
    the tuned (chosen) variant, per (problem, loss, optimizer), on the
    evaluation seeds, paired by seed: medians of final log10 loss, the median
    paired difference tuned - base (decades; negative = tuning helped) with
    its exact order-statistic interval and ``ci_method`` ("n too small" below
    6 pairs: NaN bounds), and the paired test's p-value (on log10 ``value``)."""
    scored = _scored(metrics, floor, value)
    evaluation = scored[scored["role"] == EVALUATION]
    by_variant = {
        key: group.set_index("seed")["_score"]
        for key, group in evaluation.groupby([*ENTRY, "variant"], sort=False)
    }
    empty = pd.Series(dtype=np.float64)
    rows = []
    for choice in chosen.itertuples(index=False):
        entry = (choice.problem, choice.loss, choice.optimizer)
        base_name = base if isinstance(base, str) else base[choice.optimizer]
        tuned = by_variant.get((*entry, choice.variant), empty)
        untuned = by_variant.get((*entry, base_name), empty)
        seeds = tuned.index.intersection(untuned.index)
        test = paired_test(tuned[seeds].to_numpy(), untuned[seeds].to_numpy())
        rows.append(
            dict(zip(ENTRY, entry, strict=True))
            | {
                "base_variant": base_name,
                "tuned_variant": choice.variant,
                "n_pairs": test["n_pairs"],
                "base_median_log10": float(untuned.median()) if len(untuned) else np.nan,
                "tuned_median_log10": float(tuned.median()) if len(tuned) else np.nan,
                "median_diff": test["median_diff"],
                "ci_low": test["ci_low"],
                "ci_high": test["ci_high"],
                "ci_method": test["ci_method"],
                "test": test["test"],
                "p_value": test["p_value"],
            }
        )
    return pd.DataFrame(rows)


def best_of_k_weights(n_candidates: int) -> np.ndarray:
    """K x K array: [k - 1, i - 1] = P(the i-th best of K is kept | k drawn)."""
    total = n_candidates
    weights = np.zeros((total, total))
    for k in range(1, total + 1):
        for i in range(1, total - k + 2):
            weights[k - 1, i - 1] = math.comb(total - i, k - 1) / math.comb(total, k)
    return weights


def expected_best_of_k(select_values, report_values=None) -> tuple[np.ndarray, np.ndarray]:
    """(expected, median) reported value of the kept candidate for k = 1..K.

    Candidates are ranked by ``select_values`` (lower is better; equal values
    keep their input order, the preference order); ``report_values`` (default:
    the select values) is what is reported for the kept one. The median is
    that of the kept value's discrete distribution (lower median). Values may
    be +inf (a failed candidate): a term with zero weight never contributes.
    """
    select = np.asarray(select_values, dtype=np.float64)
    report = select if report_values is None else np.asarray(report_values, dtype=np.float64)
    if select.ndim != 1 or select.shape != report.shape or select.size == 0:
        raise ValueError("select and report values must be non-empty 1-D arrays of one length")
    order = np.argsort(select, kind="stable")
    ranked = report[order]
    weights = best_of_k_weights(select.size)
    expected = np.array([np.sum(w[w > 0] * ranked[w > 0]) for w in weights])
    medians = []
    for w in weights:
        by_value = np.argsort(ranked, kind="stable")
        cumulative = np.cumsum(w[by_value])
        medians.append(ranked[by_value][np.searchsorted(cumulative, 0.5 - 1e-12)])
    return expected, np.array(medians)


# The bootstrap behind best_of_k's interval: resamples, level, the fewest seeds
# at which its coverage held in simulation, and a fixed seed (the same tables
# from the same runs, byte for byte).
BEST_OF_K_RESAMPLES = 2000
BEST_OF_K_LEVEL = 0.95
BEST_OF_K_MIN_EVALUATION_SEEDS = 6
BEST_OF_K_MIN_TUNING_SEEDS = 2
BEST_OF_K_BOOTSTRAP_SEED = 20261207
BEST_OF_K_METHOD = f"percentile bootstrap over seeds ({BEST_OF_K_RESAMPLES} resamples)"


def _expected_best(tuning_scores: np.ndarray, reported: np.ndarray, weights) -> np.ndarray:
    """``expected_best_of_k``'s expectation for many resamples at once:
    [..., K] candidate scores -> [..., K] expected reported value for k = 1..K."""
    order = np.argsort(tuning_scores, axis=-1, kind="stable")
    ranked = np.take_along_axis(reported, order, axis=-1)
    # A candidate that cannot be kept (weight 0) adds nothing, even at +inf.
    with np.errstate(invalid="ignore"):
        terms = np.where(weights > 0, weights * ranked[..., None, :], 0.0)
    return terms.sum(axis=-1)


def _seed_medians(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """[K, n] log10 values by seed, [B, n] seed indices -> [B, K] medians."""
    resampled = values[:, draws].transpose(1, 0, 2)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a candidate missing every drawn seed
        return np.nanmedian(resampled, axis=-1)


def best_of_k_intervals(tuning: np.ndarray, reported: np.ndarray, rng=None) -> pd.DataFrame:
    """The 95 % interval of the expected best of k, k = 1..K, from the log10
    values by seed: ``tuning`` [K, tuning seeds] (which candidate is kept) and
    ``reported`` [K, evaluation seeds] (what it reports), candidates in
    preference order, NaN where a candidate lacks a seed. Columns
    ``expected_low``, ``expected_high`` and ``ci_method`` (the method, or why
    there is no interval: too few seeds of either role)."""
    tuning = np.asarray(tuning, dtype=np.float64)
    reported = np.asarray(reported, dtype=np.float64)
    candidates = tuning.shape[0]
    n_tuning, n_reported = tuning.shape[1], reported.shape[1]
    low = np.full(candidates, np.nan)
    high = np.full(candidates, np.nan)
    methods = []
    for k in range(1, candidates + 1):
        if n_reported < BEST_OF_K_MIN_EVALUATION_SEEDS:
            methods.append(
                f"n too small: {n_reported} evaluation seeds "
                f"({BEST_OF_K_MIN_EVALUATION_SEEDS} needed)"
            )
        elif k > 1 and n_tuning < BEST_OF_K_MIN_TUNING_SEEDS:
            methods.append(
                f"n too small: {n_tuning} tuning seed{'' if n_tuning == 1 else 's'}, "
                "the choice cannot be resampled "
                f"({BEST_OF_K_MIN_TUNING_SEEDS} needed)"
            )
        else:
            methods.append(BEST_OF_K_METHOD)
    if any(method == BEST_OF_K_METHOD for method in methods):
        rng = np.random.default_rng(BEST_OF_K_BOOTSTRAP_SEED) if rng is None else rng
        draws = BEST_OF_K_RESAMPLES
        tuning_draws = rng.integers(0, n_tuning, size=(draws, n_tuning))
        reported_draws = rng.integers(0, n_reported, size=(draws, n_reported))
        estimates = _expected_best(
            _seed_medians(tuning, tuning_draws),
            _seed_medians(reported, reported_draws),
            best_of_k_weights(candidates),
        )
        tail = (1 - BEST_OF_K_LEVEL) / 2
        # Order statistics of the resamples (no interpolation: +inf stays +inf).
        bounds = np.quantile(estimates, [tail, 1 - tail], axis=0, method="inverted_cdf")
        kept = np.array([method == BEST_OF_K_METHOD for method in methods])
        low[kept], high[kept] = bounds[0][kept], bounds[1][kept]
    return pd.DataFrame({"expected_low": low, "expected_high": high, "ci_method": methods})


def _log10_by_seed(scored: pd.DataFrame, role: str, variants: list) -> np.ndarray:
    """[variants, seeds] log10 values of ``role``'s runs (NaN: no such run)."""
    runs = scored[scored["role"] == role]
    table = runs.pivot_table(index="variant", columns="seed", values="_score", aggfunc="first")
    return table.reindex(variants).to_numpy(np.float64)


def tuning_curve(
    metrics: pd.DataFrame,
    order=None,
    report: str = EVALUATION,
    floor: float = FLOOR,
    value: str = "final_loss",
) -> pd.DataFrame:
    """Per (problem, loss, optimizer) and k = 1..K: the expected and median
    log10 ``value`` (final loss by default) of the variant a k-trial tuner keeps (chosen by its
    tuning median, reported by its ``report``-seed median), the expected
    value's 95 % interval (``best_of_k_intervals``), ``n_tuning_seeds`` and
    ``n_evaluation_seeds`` (the most of any candidate)."""
    tuning = variant_scores(metrics, TUNING, order, floor, value)
    reported = variant_scores(metrics, report, order, floor, value)
    reported = reported[[*ENTRY, "variant", "score"]].rename(columns={"score": "score_r"})
    merged = tuning.merge(reported, on=[*ENTRY, "variant"], how="left")
    scored = _scored(metrics, floor, value)
    by_entry = dict(list(scored.groupby(ENTRY, sort=False)))
    rows = []
    for entry, group in merged.groupby(ENTRY, sort=False):
        expected, median = expected_best_of_k(group["score"], group["score_r"])
        variants = list(group["variant"])
        tuning_values = _log10_by_seed(by_entry[entry], TUNING, variants)
        reported_values = _log10_by_seed(by_entry[entry], report, variants)
        if reported_values.size == 0:  # no run of the reporting role: no interval
            reported_values = np.full((len(variants), 0), np.nan)
        interval = best_of_k_intervals(tuning_values, reported_values)
        for k in range(1, len(group) + 1):
            rows.append(
                dict(zip(ENTRY, entry, strict=True))
                | {
                    "k": k,
                    "n_candidates": len(group),
                    "expected_log10": expected[k - 1],
                    "median_log10": median[k - 1],
                    "expected_low": interval["expected_low"].iloc[k - 1],
                    "expected_high": interval["expected_high"].iloc[k - 1],
                    "ci_method": interval["ci_method"].iloc[k - 1],
                    "n_tuning_seeds": tuning_values.shape[1],
                    "n_evaluation_seeds": reported_values.shape[1],
                }
            )
    return pd.DataFrame(rows, columns=[*ENTRY, *BEST_OF_K_COLUMNS])


# tuning_curve's columns after the entry's.
BEST_OF_K_COLUMNS = [
    "k",
    "n_candidates",
    "expected_log10",
    "median_log10",
    "expected_low",
    "expected_high",
    "ci_method",
    "n_tuning_seeds",
    "n_evaluation_seeds",
]


def at_budgets(curve: pd.DataFrame) -> pd.DataFrame:
    """``tuning_curve``'s rows for every k = 1..(the most candidates of any
    optimizer of the (problem, loss)), with ``exhausted`` (k > the optimizer's
    n_candidates: its k = K result carried on) and ``rank`` (1 = lowest
    expected log10 final loss at that budget; ties share the mean rank)."""
    rows = []
    for _, block in curve.groupby(["problem", "loss"], sort=False):
        budget = int(block["k"].max())
        for _, entry in block.groupby("optimizer", sort=False):
            entry = entry.sort_values("k")
            last = entry.iloc[-1]
            for k in range(1, budget + 1):
                row = entry.iloc[k - 1] if k <= len(entry) else last
                rows.append(row.to_dict() | {"k": k, "exhausted": k > len(entry)})
    table = pd.DataFrame(rows, columns=[*curve.columns, "exhausted"])
    ranks = table.groupby(["problem", "loss", "k"], sort=False)["expected_log10"].rank()
    return table.assign(rank=ranks).astype({"k": int, "n_candidates": int})


def _edge_text(name: str, value, tried: list) -> str | None:
    numbers = sorted({v for v in tried if isinstance(v, int | float) and not isinstance(v, bool)})
    if len(numbers) < 2 or value not in (numbers[0], numbers[-1]):
        return None
    side = "lowest" if value == numbers[0] else "highest"
    return f"{name}={value!r} ({side} of {len(numbers)} tried)"


def range_edges(choice: pd.DataFrame, candidates: pd.DataFrame, swept: dict) -> list[str]:
    """Per row of ``choice``: its chosen hyper-parameter values that are the
    lowest or highest tried among the entry's candidates ("" where none), e.g.
    ``lr=10.0 (highest of 6 tried)``; ``swept``: variant -> its swept values."""
    require_columns(candidates, [*ENTRY, "variant"], "range_edges")
    tried = candidates.groupby(ENTRY, sort=False)["variant"].unique()
    found = []
    for row in choice.itertuples(index=False):
        entry = (row.problem, row.loss, row.optimizer)
        values = swept.get(row.variant, {})
        others = [swept.get(v, {}) for v in tried.get(entry, [])]
        edges = [
            _edge_text(name, value, [o[name] for o in others if name in o])
            for name, value in sorted(values.items())
        ]
        found.append("; ".join(edge for edge in edges if edge))
    return found
