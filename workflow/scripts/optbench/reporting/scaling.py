"""Does a speed-up survive scale? Matched-loss speed-ups across model sizes and
budgets, and rank flips between intermediate checkpoints and ends of training.

A *family* is a config entry with ``sizes:`` and/or ``budgets:``
(``planning.settings``): each of its (size, budget) is a problem of its own,
and ``Context.scaling`` maps each such problem to its family, size, budget
(steps) and declared parameter count. Values are the ranking metric
(``ranking_metric``: lower is better, the held-out loss where the problem has
it; a diverged run counts as +inf), on the evaluation seeds of each block's
tuned variant.

Matched-loss speed-up (``scaling.tsv``), after Wen et al. (2025): for an
optimizer at a size and budget B, the budget the baseline would need to reach
the optimizer's final metric, read off the baseline's metric-against-budget
curve at that size (one point per budget run, the median over seeds), by
linear interpolation in log(budget)-log(metric) between the two budgets
around the first crossing; speed-up = that budget / B. Censored honestly:
where the baseline's smallest budget already reaches the level, the speed-up
is at most smallest / B ("<"); where no budget of the baseline reaches it,
more than largest / B (">"). A baseline that does not improve with the
budget is thus either "<" or ">", never a number. Its interval: a percentile
bootstrap over seeds, resampled once for every budget and optimizer alike
(runs of one seed pair across budgets and optimizers: same data and initial
weights); a resample whose speed-up is censored keeps its place as 0 ("<")
or +inf (">"), never dropped, so an interval end on it reads "< x" or "> x".
``tests/test_scaling.py`` checks its coverage by simulation. In time: times
the baseline's median seconds per step at that size over the optimizer's
(each measured alone, engines/timing.py), step times taken as fixed.

Rank flips (``rank_flips.tsv``): per family, loss and size, the optimizers
ranked at an intermediate point of the longest budget's runs (after b steps,
b a shorter budget: the median held-out loss of their held-out curve there
where the runs recorded one, ``eval_every``; else the median training loss
at that step) against their ranking at the end of budget b's own runs (the
ranking metric): Kendall's tau-b between the two orders and the pairs whose
order flips. A flip means a comparison read off the truncated longer run
would have given another answer than runs trained for b steps.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from optbench.reporting import cells, intervals
from optbench.reporting.ranking_metric import VALUE

CONFIDENCE = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 20250601  # fixed: the tables are a function of the runs
# Metrics whose values are levels a longer budget lowers; costs to a target are not.
LEVEL_METRICS = ("final_loss", "heldout_loss", "heldout_accuracy")
METHOD = f"percentile bootstrap over paired seeds, {RESAMPLES} resamples, censored kept"

COLUMNS = [
    "family",
    "loss",
    "size",
    "parameters",
    "optimizer",
    "baseline",
    "budget",
    "metric",
    "n_seeds",
    "median_value",
    "matched_budget",
    "censored",
    "speedup",
    "speedup_low",
    "speedup_high",
    "speedup_text",
    "ci_method",
    "step_time_ratio",
    "time_speedup",
    "time_speedup_low",
    "time_speedup_high",
]
FLIP_COLUMNS = [
    "family",
    "loss",
    "size",
    "parameters",
    "budget",
    "longest_budget",
    "intermediate_metric",
    "end_metric",
    "n_optimizers",
    "kendall_tau",
    "n_pairs",
    "n_flipped",
    "flipped_pairs",
    "order_intermediate",
    "order_end",
]
# censoring codes of matched_budgets
EXACT, AT_MOST, MORE_THAN = 0, -1, 1
CENSOR_TEXT = {EXACT: "", AT_MOST: "<", MORE_THAN: ">"}


def matched_budgets(budgets, curves, targets) -> tuple[np.ndarray, np.ndarray]:
    """The budget at which each baseline curve reaches its target, and how it is censored.

    ``budgets``: k increasing budgets; ``curves``: k x R baseline levels (one
    column per curve; +inf: diverged); ``targets``: R levels. Returns the
    matched budgets (R) and codes: EXACT (interpolated in log-log between the
    two budgets around the first budget whose level is at most the target),
    AT_MOST (the first budget already reaches it, or the budget before it
    diverged: the budget returned is an upper bound) or MORE_THAN (no budget
    reaches it: the largest budget is a lower bound).
    """
    plain = np.asarray(budgets, dtype=np.float64)
    budgets = np.log(plain)
    curves = np.asarray(curves, dtype=np.float64).reshape(len(budgets), -1)
    targets = np.broadcast_to(np.asarray(targets, dtype=np.float64), curves.shape[1:])
    reached = curves <= targets  # NaN never reaches
    first = np.argmax(reached, axis=0)
    columns = np.arange(curves.shape[1])
    never = ~reached.any(axis=0)
    previous = np.maximum(first - 1, 0)
    high, low = curves[previous, columns], curves[first, columns]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = (np.log(high) - np.log(targets)) / (np.log(high) - np.log(low))
        log_matched = budgets[previous] + share * (budgets[first] - budgets[previous])
    interpolable = (first > 0) & np.isfinite(high) & (high > 0) & (low > 0) & (targets > 0)
    at_most = ~never & ~interpolable
    log_matched = np.where(at_most, budgets[first], log_matched)
    log_matched = np.where(never, budgets[-1], log_matched)
    codes = np.where(never, MORE_THAN, np.where(at_most, AT_MOST, EXACT))
    # A flat stretch equal to the target: the first budget on it.
    log_matched = np.where(interpolable & (high == low), budgets[first], log_matched)
    # Censored: the budget itself, not exp(log(budget)), so that bounds print exactly.
    matched = np.where(codes == EXACT, np.exp(log_matched), plain[np.where(never, -1, first)])
    return matched, codes


def _log_median(values: np.ndarray, axis=-1) -> np.ndarray:
    """Medians on log10 (NaN: diverged, counted as +inf), back on the value scale."""
    logged = np.log10(np.where(np.isfinite(values) & (values > 0), values, np.inf))
    with np.errstate(invalid="ignore"):
        return 10.0 ** np.median(logged, axis=axis)


def speedup_with_interval(
    budgets,
    baseline: np.ndarray,
    optimizer: np.ndarray,
    budget: int,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    rng: np.random.Generator | None = None,
) -> dict:
    """The matched-loss speed-up of one optimizer run at ``budget`` (module doc).

    ``baseline``: k budgets x n seeds of the baseline's values; ``optimizer``:
    its n values on the same seeds, in the same order (pairing). Returns the
    speed-up (its bound where censored), its code, the interval ends (0 and
    +inf: open below and above) and the matched budget.
    """
    baseline = np.asarray(baseline, dtype=np.float64)
    optimizer = np.asarray(optimizer, dtype=np.float64)
    matched, code = matched_budgets(budgets, _log_median(baseline)[:, None], _log_median(optimizer))
    rng = rng if rng is not None else np.random.default_rng(BOOTSTRAP_SEED)
    n = optimizer.shape[0]
    result = {
        "matched_budget": float(matched[0]),
        "code": int(code[0]),
        "speedup": float(matched[0] / budget),
        # The bounds an open end stands for: the smallest and largest budget's ratio.
        "floor": float(min(budgets) / budget),
        "ceiling": float(max(budgets) / budget),
    }
    if n < intervals.minimum_n(confidence):
        # Measured: 79 % coverage at 3 seeds, 89 % at 4 (tests/test_scaling.py).
        return result | {"low": math.nan, "high": math.nan, "method": "n too small"}
    draws = rng.integers(0, n, size=(resamples, n))
    curves = _log_median(baseline[:, draws])  # k x resamples
    targets = _log_median(optimizer[draws])
    boot, codes = matched_budgets(budgets, curves, targets)
    ratios = boot / budget
    ratios = np.where(codes == AT_MOST, 0.0, np.where(codes == MORE_THAN, np.inf, ratios))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail], method="inverted_cdf")
    return result | {"low": float(low), "high": float(high), "method": METHOD}


def _number(value: float) -> str:
    return f"{value:.3g}"


def speedup_text(result: dict) -> str:
    """e.g. "1.41x [1.12, 1.87]", "> 4x [1.9, > 4]", "< 0.25x [< 0.25, 0.6]"."""
    point = CENSOR_TEXT[result["code"]]
    point = f"{point} " if point else ""
    if math.isnan(result["low"]):
        return f"{point}{_number(result['speedup'])}x ({result['method']})"

    def end(value: float) -> str:  # 0 and inf: censored resamples, open ends
        if value == 0:
            return f"< {_number(result['floor'])}"
        return f"> {_number(result['ceiling'])}" if math.isinf(value) else _number(value)

    return f"{point}{_number(result['speedup'])}x [{end(result['low'])}, {end(result['high'])}]"


def _seed_matrix(runs: pd.DataFrame, problems: list[str], optimizer: str, seeds: list[int]):
    """budgets x seeds of one optimizer's ranking values (NaN where a seed is missing)."""
    rows = runs[runs["optimizer"] == optimizer]
    table = rows.pivot_table(index="problem", columns="seed", values=VALUE, aggfunc="first")
    table = table.reindex(index=problems, columns=seeds)
    return table.to_numpy(np.float64)


def _members(context_scaling: dict) -> pd.DataFrame:
    frame = pd.DataFrame(
        [{"tuned": True, "problem": name, **facts} for name, facts in context_scaling.items()],
        columns=["problem", "family", "size", "budget", "parameters", "tuned"],
    )
    frame["size"] = frame["size"].fillna("")
    return frame


def transfer_sources(context_scaling: dict) -> dict[str, str]:
    """Untuned problem (``tune_at``) -> the tuned problem whose setting it takes:
    of its family, the nearest size by parameter count, then the nearest budget
    in log steps, ties to the smaller."""
    members = _members(context_scaling)
    sources = {}
    for _, member in members[~members["tuned"].astype(bool)].iterrows():
        tuned = members[(members["family"] == member["family"]) & members["tuned"].astype(bool)]
        if tuned.empty:
            continue

        def distance(row, member=member):
            counts = [row["parameters"], member["parameters"]]
            size_gap = abs(math.log(counts[0] / counts[1])) if all(counts) else 0.0
            budget_gap = abs(math.log(row["budget"] / member["budget"]))
            return (size_gap, row["parameters"] or 0, budget_gap, row["budget"])

        best = min(tuned.itertuples(index=False), key=lambda r: distance(r._asdict()))
        sources[member["problem"]] = best.problem
    return sources


def transfer_selection(choice: pd.DataFrame, context_scaling: dict) -> pd.DataFrame:
    """The selection with each untuned block's variant and score taken from its
    source block (``transfer_sources``) for the same loss and optimizer, and the
    column ``tuned_at`` (the problem whose tuning seeds chose it); unchanged
    where every block is tuned."""
    sources = transfer_sources(context_scaling)
    if not sources:
        return choice
    choice = choice.assign(tuned_at=choice["problem"])
    keyed = choice.set_index(["problem", "loss", "optimizer"])
    for position, row in choice.iterrows():
        source = sources.get(row["problem"])
        key = (source, row["loss"], row["optimizer"])
        if source is None or key not in keyed.index:
            continue
        for column in ("variant", "score", "n_tied", "n_tuning_seeds"):
            choice.at[position, column] = keyed.at[key, column]
        choice.at[position, "tuned_at"] = source
    return choice


def speedup_table(
    chosen: pd.DataFrame, context_scaling: dict, baseline: str | None, used: dict
) -> pd.DataFrame:
    """``scaling.tsv`` (module doc): one row per family, loss, size, optimizer
    but the baseline, and budget. ``chosen``: the evaluation runs of the tuned
    variants with ``ranking_value``; ``used``: (problem, loss) -> the metric."""
    members = _members(context_scaling)
    if members.empty or baseline is None:
        return pd.DataFrame(columns=COLUMNS)
    runs = chosen.merge(members, on="problem")
    rows = []
    for (family, loss, size), block in runs.groupby(["family", "loss", "size"], sort=False):
        order = block.drop_duplicates("problem").sort_values("budget")
        problems, budgets = list(order["problem"]), [int(b) for b in order["budget"]]
        if baseline not in set(block["optimizer"]):
            continue
        metric = used.get((problems[0], loss), "final_loss")
        seeds = sorted(set(block["seed"]))
        base = _seed_matrix(block, problems, baseline, seeds)
        times = block.groupby("optimizer")["seconds_per_step"].median()
        for optimizer in dict.fromkeys(block["optimizer"]):
            if optimizer == baseline:
                continue
            values = _seed_matrix(block, problems, optimizer, seeds)
            ratio = times.get(optimizer, math.nan) / times.get(baseline, math.nan)
            for position, budget in enumerate(budgets):
                row = {
                    "family": family,
                    "loss": loss,
                    "size": size,
                    "parameters": order["parameters"].iloc[0],
                    "optimizer": optimizer,
                    "baseline": baseline,
                    "budget": budget,
                    "metric": metric,
                    "n_seeds": len(seeds),
                    "median_value": float(_log_median(values[position])),
                }
                if metric not in LEVEL_METRICS or len(budgets) < 2:
                    why = (
                        "not estimable: the ranking metric is a cost, not a level"
                        if metric not in LEVEL_METRICS
                        else "not estimable: one budget (the baseline's curve needs two)"
                    )
                    rows.append(row | {"speedup_text": why, "ci_method": why})
                    continue
                result = speedup_with_interval(budgets, base, values[position], budget)
                time_factor = 1.0 / ratio if np.isfinite(ratio) and ratio > 0 else math.nan
                rows.append(
                    row
                    | {
                        "matched_budget": result["matched_budget"],
                        "censored": CENSOR_TEXT[result["code"]],
                        "speedup": result["speedup"],
                        "speedup_low": result["low"],
                        "speedup_high": result["high"],
                        "speedup_text": speedup_text(result),
                        "ci_method": result["method"],
                        "step_time_ratio": ratio,
                        "time_speedup": result["speedup"] * time_factor,
                        "time_speedup_low": result["low"] * time_factor,
                        "time_speedup_high": result["high"] * time_factor,
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def flipped_pairs(first: dict, second: dict) -> list[tuple[str, str]]:
    """Pairs of names ordered one way by ``first`` and the other by ``second``
    (lower is better in both; a tie in either is no flip)."""
    names = [name for name in first if name in second]
    return [
        (a, b)
        for a, b in itertools.combinations(names, 2)
        if np.sign(first[a] - first[b]) * np.sign(second[a] - second[b]) < 0
    ]


def kendall_tau(first: dict, second: dict) -> float:
    """Kendall's tau-b between two scorings of the same names (NaN below two)."""
    names = [name for name in first if name in second]
    if len(names) < 2:
        return math.nan
    ranks = [stats.rankdata([d[n] for n in names]) for d in (first, second)]
    return float(stats.kendalltau(*ranks).statistic)


def _order(values: dict) -> str:
    return " < ".join(sorted(values, key=lambda name: (values[name], name)))


def intermediate_values(
    curves: pd.DataFrame | None, steps: pd.DataFrame, problem: str, loss: str, at: int
) -> tuple[dict, str]:
    """Per optimizer, its median level after ``at`` steps of ``problem``'s runs:
    the held-out curve's median where every optimizer's runs recorded one
    there, else the training loss's (steps table, median over seeds)."""
    if curves is not None and not curves.empty:
        here = curves[
            (curves["problem"] == problem) & (curves["loss"] == loss) & (curves["step"] == at)
        ]
        wanted = set(steps.loc[steps["problem"] == problem, "optimizer"])
        if not here.empty and set(here["optimizer"]) >= wanted:
            medians = here.groupby("optimizer")["heldout_loss"].apply(
                lambda v: float(_log_median(v.to_numpy(np.float64)))
            )
            return medians.to_dict(), "heldout_loss (curve)"
    here = steps[(steps["problem"] == problem) & (steps["loss"] == loss) & (steps["step"] == at)]
    medians = here.set_index("optimizer")["median"].astype(float)
    return medians.fillna(np.inf).to_dict(), "final_loss (training loss at that step)"


def rank_flip_table(
    chosen: pd.DataFrame,
    steps: pd.DataFrame,
    context_scaling: dict,
    used: dict,
    curves: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``rank_flips.tsv`` (module doc): one row per family, loss, size and shorter
    budget. ``steps``: the step table of the chosen variants; ``curves``: held-out
    curve points (problem, loss, optimizer, seed, step, heldout_loss) or None."""
    members = _members(context_scaling)
    if members.empty:
        return pd.DataFrame(columns=FLIP_COLUMNS)
    runs = chosen.merge(members, on="problem")
    rows = []
    for (family, loss, size), block in runs.groupby(["family", "loss", "size"], sort=False):
        order = block.drop_duplicates("problem").sort_values("budget")
        if len(order) < 2:
            continue
        longest = order.iloc[-1]
        for _, shorter in order.iloc[:-1].iterrows():
            budget = int(shorter["budget"])
            early, early_metric = intermediate_values(
                curves, steps, longest["problem"], loss, budget
            )
            end_rows = block[block["problem"] == shorter["problem"]]
            end = {
                name: float(_log_median(group[VALUE].to_numpy(np.float64)))
                for name, group in end_rows.groupby("optimizer", sort=False)
            }
            flips = flipped_pairs(early, end)
            names = [name for name in early if name in end]
            rows.append(
                {
                    "family": family,
                    "loss": loss,
                    "size": size,
                    "parameters": shorter["parameters"],
                    "budget": budget,
                    "longest_budget": int(longest["budget"]),
                    "intermediate_metric": early_metric,
                    "end_metric": used.get((shorter["problem"], loss), "final_loss"),
                    "n_optimizers": len(names),
                    "kendall_tau": kendall_tau(early, end),
                    "n_pairs": len(names) * (len(names) - 1) // 2,
                    "n_flipped": len(flips),
                    "flipped_pairs": "; ".join(f"{a}/{b}" for a, b in flips),
                    "order_intermediate": _order({n: early[n] for n in names}),
                    "order_end": _order({n: end[n] for n in names}),
                }
            )
    return pd.DataFrame(rows, columns=FLIP_COLUMNS)


def curve_table(cell_paths, choice: pd.DataFrame) -> pd.DataFrame | None:
    """The held-out curve points of the chosen variants' cell summaries
    (problem, loss, optimizer, seed, step, heldout_loss); None where no run
    recorded a curve."""
    frames = []
    chosen = set(choice[["problem", "loss", "optimizer", "variant"]].itertuples(index=False))
    for path in cell_paths:
        data = cells.read_cell_summary(path)
        identity = data["cell"]
        key = tuple(identity.get(f) for f in ("problem", "loss", "optimizer", "variant"))
        if "curves" in data and key in chosen:
            frames.append(pd.DataFrame(data["curves"]).assign(**identity))
    return pd.concat(frames, ignore_index=True) if frames else None


def truncation_warnings(flips: pd.DataFrame) -> list[str]:
    """One line per (family, loss, size, budget) whose mid-run ranking disagrees
    with the ranking at the end of runs of that budget: a comparison read off
    the truncated longer runs would have answered differently."""
    return [
        f"warning: {row.family}/{row.loss}{f'/{row.size}' if row.size else ''}: the ranking "
        f"after {row.budget} of {row.longest_budget} steps flips {row.flipped_pairs} against "
        f"runs trained for {row.budget} steps (Kendall's tau {row.kendall_tau:.2f}): do not "
        "read a comparison off truncated runs"
        for row in flips.itertuples(index=False)
        if row.n_flipped
    ]


def truncation_notes(flips: pd.DataFrame | None, problem: str, loss: str) -> list[str]:
    """For the landing page: where ``problem`` is the longest budget of a family
    and reading its runs mid-way flips pairs against runs trained for that
    budget, one warning per such budget."""
    if flips is None or flips.empty:
        return []
    notes = []
    for row in flips[(flips["loss"] == loss) & (flips["n_flipped"] > 0)].itertuples(index=False):
        size = f"-{row.size}" if isinstance(row.size, str) and row.size else ""
        if f"{row.family}{size}-b{row.longest_budget}" != problem:
            continue
        notes.append(
            f"read after {row.budget} of its {row.longest_budget} steps, these runs rank "
            f"{row.flipped_pairs} the other way round from runs trained for {row.budget} steps "
            "(rank_flips.tsv): compare optimizers at the end of their own budgets, not at "
            "intermediate checkpoints"
        )
    return notes
