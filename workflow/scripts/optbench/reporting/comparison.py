"""Paired comparisons of tuned optimizers, rankings, win probabilities and Friedman.

Pairing. Runs with the same seed share the problem draw (data, initial
weights) across optimizers, so optimizers are compared seed by seed on the
evaluation seeds. Values are "lower is better" (final log10 loss by default);
a diverged run counts as +inf: worse than any finite run, and two diverged
runs tie (``statistics.log10_or_inf``). A seed missing for one side drops the
pair.

Paired test (``paired_test``), on the differences d = a - b:

- pairs with d = 0 (including both diverged) carry no sign and are dropped,
  as in Wilcoxon's own convention (scipy ``zero_method="wilcox"``);
- "ties dominate" when the tied pairs (d = 0, or |d| shared with another
  pair, e.g. every pair where one side diverged) are more than half of all
  pairs: the magnitudes then say little, so the exact two-sided sign test
  (``scipy.stats.binomtest`` on the nonzero pairs) is used;
- otherwise the Wilcoxon signed-rank test: exact null distribution when the
  nonzero |d| are distinct and n <= 50, an exhaustive permutation test when
  they have ties and n <= 13 (``PermutationMethod``), else the normal
  approximation with scipy's tie correction. Infinite differences are
  replaced by finite values beyond the largest finite |d| (same ranks).

Effect sizes: ``rank_biserial`` = (R_a - R_b) / (R_a + R_b), the
matched-pairs rank-biserial correlation, where R_a is the rank sum of the
pairs a wins (d < 0); +1 means a wins every nonzero pair. ``p_a_better`` is
the share of pairs a wins, ties counting one half. ``median_diff`` is the
median of d (tied pairs included) with the exact distribution-free 95 %
interval of a median, two order statistics of d (``intervals.median_interval``:
coverage >= 95 % for any distribution, infinite differences included, no
random numbers); ``ci_method`` names the order statistics and the coverage, or
says "n too small" (NaN bounds) below 6 pairs, where no such interval reaches
95 %. (A percentile bootstrap, used before, covers far less than 95 % at
3-5 pairs.)

Holm correction (``holm``) is across the pairs of one (problem, loss).

Divergence decides on its own (``divergence_winner``): where one side
diverged on every shared seed and the other on none, the other wins the pair
whatever the test says (with 4 seeds the sign test cannot go below 0.125, so
an optimizer that diverged on all 4 seeds would otherwise share the first
rank). ``pairwise_table`` states each pair's ``winner`` and what decided it
(``decided_by``: "divergence", or "holm" for Holm-corrected p < alpha).

Ranking rule (``ranking_table``): an optimizer's rank is 1 + the number of
optimizers that beat it: significantly (Holm-corrected p < alpha, in their
favour) or by divergence (above). Optimizers that nothing separates share a
rank; the ranks need not be consecutive (1, 1, 3) and do not depend on any
ordering or chaining. Beside it, ``point_rank`` orders by the median alone
(1 = lowest median; equal medians share the smaller rank), and ``note`` says
where the two differ: which optimizers a row is ahead of on the median
without a significant difference (with its wins out of the shared seeds),
and, where no difference could be significant with these seeds
(``optbench.reporting.power``), the seeds needed. Rows are listed by rank,
then median.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from optbench.reporting import power
from optbench.reporting.intervals import median_interval
from optbench.reporting.statistics import FLOOR, log10_or_inf, require_columns

ALPHA = 0.05
RUN_COLUMNS = ["problem", "loss", "optimizer", "seed", "final_loss"]
BLOCK = ["problem", "loss"]

PAIR_COLUMNS = [
    "n_pairs",
    "n_ties",
    "test",
    "statistic",
    "p_value",
    "rank_biserial",
    "p_a_better",
    "median_diff",
    "ci_low",
    "ci_high",
    "ci_method",
    "better",
]


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in input order; NaN entries stay NaN
    and do not count in the number of tests m.

    Sorted ascending, p_(i) becomes max_{j <= i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = present.size
    order = present[np.argsort(p[present], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def _finite_surrogate(d: np.ndarray) -> np.ndarray:
    """d with +-inf replaced beyond the largest finite |d|: ranks of |d| unchanged."""
    finite = np.abs(d[np.isfinite(d)])
    beyond = (finite.max() if finite.size else 0.0) + 1.0
    return np.where(np.isfinite(d), d, np.sign(d) * beyond)


def _differences(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be 1-D arrays of one length: {a.shape}, {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    with np.errstate(invalid="ignore"):
        d = a - b
    return np.where(a == b, 0.0, d)  # inf - inf: both diverged, a tie


def _wilcoxon(nonzero: np.ndarray, tied_magnitudes: bool):
    n = nonzero.size
    if not tied_magnitudes and n <= 50:
        method, label = "exact", "wilcoxon exact"
    elif n <= 13:
        method, label = stats.PermutationMethod(n_resamples=2**n), "wilcoxon permutation"
    else:
        method, label = "asymptotic", "wilcoxon normal"
    result = stats.wilcoxon(nonzero, zero_method="wilcox", method=method)
    return label, float(result.statistic), float(result.pvalue)


def paired_test(a, b) -> dict:
    """Compare two seed-aligned arrays of lower-is-better values (inf = failed).

    Returns the ``PAIR_COLUMNS`` (``better``: "a", "b" or "" by the direction of
    the test used, whatever the p-value; significance is decided after Holm).
    """
    d = _differences(a, b)
    n = d.size
    nonzero = d[d != 0]
    a_wins, b_wins = int((nonzero < 0).sum()), int((nonzero > 0).sum())
    row = dict.fromkeys(PAIR_COLUMNS, float("nan")) | {
        "n_pairs": n,
        "n_ties": n - nonzero.size,
        "test": "none",
        "ci_method": "no pairs",
        "better": "",
    }
    if n == 0:
        return row
    row["p_a_better"] = (a_wins + 0.5 * (n - nonzero.size)) / n
    with np.errstate(invalid="ignore"):
        row["median_diff"] = float(np.median(d))
    row["ci_low"], row["ci_high"], row["ci_method"] = median_interval(d)
    if nonzero.size == 0:
        row.update(test="none (all pairs tie)", statistic=0.0, p_value=1.0, rank_biserial=0.0)
        return row
    magnitudes = np.abs(_finite_surrogate(nonzero))
    ranks = stats.rankdata(magnitudes)
    r_a, r_b = ranks[nonzero < 0].sum(), ranks[nonzero > 0].sum()
    row["rank_biserial"] = float((r_a - r_b) / (r_a + r_b))
    _, counts = np.unique(magnitudes, return_counts=True)
    tied = (n - nonzero.size) + int(counts[counts > 1].sum())
    if tied > n / 2:
        p = stats.binomtest(a_wins, nonzero.size, 0.5).pvalue
        row.update(test="sign", statistic=float(a_wins), p_value=float(p))
        direction = a_wins - b_wins
    else:
        label, statistic, p = _wilcoxon(_finite_surrogate(nonzero), bool((counts > 1).any()))
        row.update(test=label, statistic=statistic, p_value=p)
        direction = r_a - r_b
    row["better"] = "a" if direction > 0 else "b" if direction < 0 else ""
    return row


def divergence_winner(a, b) -> str:
    """ "a" when b diverged (+inf) on every shared seed and a on none, "b" the
    other way round, else "" (seed-aligned log10 values, NaN = missing)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    shared = ~(np.isnan(a) | np.isnan(b))
    a, b = a[shared], b[shared]
    if a.size == 0:
        return ""
    if np.isinf(b).all() and np.isfinite(a).all():
        return "a"
    if np.isinf(a).all() and np.isfinite(b).all():
        return "b"
    return ""


def _check_runs(runs: pd.DataFrame, value: str) -> None:
    require_columns(runs, [*BLOCK, "optimizer", "seed", value], "paired comparisons")
    duplicated = runs.duplicated([*BLOCK, "optimizer", "seed"])
    if duplicated.any():
        first = runs[duplicated].iloc[0]
        raise ValueError(
            "paired comparisons need one run per (problem, loss, optimizer, seed); "
            f"{first['problem']}/{first['loss']}/{first['optimizer']} seed {first['seed']} "
            "appears more than once. Pass the evaluation runs of the chosen variants only "
            "(selection.tuned_evaluation_runs)."
        )


def _blocks(runs: pd.DataFrame, value: str, floor: float):
    """(problem, loss) -> seeds x optimizers table of log10 values (inf = diverged)."""
    _check_runs(runs, value)
    scored = runs.assign(_score=log10_or_inf(runs[value].to_numpy(np.float64), floor))
    for key, block in scored.groupby(BLOCK, sort=False):
        optimizers = list(dict.fromkeys(block["optimizer"]))
        table = block.pivot(index="seed", columns="optimizer", values="_score")
        yield key, table[optimizers]


def pairwise_table(
    runs: pd.DataFrame,
    value: str = "final_loss",
    floor: float = FLOOR,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Every pair (a, b) of optimizers per (problem, loss) on log10 ``value``.

    ``runs``: one row per (problem, loss, optimizer, seed) with ``value``
    (evaluation seeds, chosen variants). Pairs follow the optimizers' order of
    first appearance; ``p_holm`` is Holm-corrected across a block's pairs.
    ``median_diff`` and its interval are in log10 units (decades; a - b).
    ``winner``: the optimizer that wins the pair (by ``decided_by``:
    "divergence" or "holm", module doc), "" when none does.
    """
    rows = []
    for (problem, loss), table in _blocks(runs, value, floor):
        block_rows = []
        for a, b in itertools.combinations(table.columns, 2):
            result = paired_test(table[a].to_numpy(), table[b].to_numpy())
            diverged = divergence_winner(table[a].to_numpy(), table[b].to_numpy())
            block_rows.append(
                {"problem": problem, "loss": loss, "a": a, "b": b, "_diverged": diverged} | result
            )
        adjusted = holm([r["p_value"] for r in block_rows])
        for r, p in zip(block_rows, adjusted, strict=True):
            r["p_holm"] = p
            side = r.pop("_diverged")
            if side:
                r["decided_by"] = "divergence"
            elif p < alpha and r["better"]:
                side, r["decided_by"] = r["better"], "holm"
            else:
                r["decided_by"] = ""
            r["winner"] = {"a": r["a"], "b": r["b"]}.get(side, "")
        rows.extend(block_rows)
    columns = ["problem", "loss", "a", "b", *PAIR_COLUMNS, "p_holm", "winner", "decided_by"]
    return pd.DataFrame(rows, columns=columns)


def ranking_table(
    runs: pd.DataFrame,
    pairwise: pd.DataFrame | None = None,
    value: str = "final_loss",
    floor: float = FLOOR,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Per (problem, loss, optimizer): ``n``, ``n_diverged``, ``median_log10``
    (median of log10 ``value``, diverged = +inf), ``rank`` (1 + number of
    optimizers that beat it with Holm-corrected p < alpha or by divergence),
    ``beaten_by`` (those, comma-separated), ``point_rank`` (by the median
    alone) and ``note`` (module doc). Blocks in order of first appearance;
    within a block by rank, then median."""
    if pairwise is None:
        pairwise = pairwise_table(runs, value, floor, alpha=alpha)
    require_columns(pairwise, [*BLOCK, "a", "b", "better", "p_holm"], "ranking_table")
    beaten: dict[tuple, list[str]] = {}
    for r in pairwise[(pairwise["p_holm"] < alpha) & (pairwise["better"] != "")].itertuples():
        winner, loser = (r.a, r.b) if r.better == "a" else (r.b, r.a)
        beaten.setdefault((r.problem, r.loss, loser), []).append(winner)
    columns = [
        *BLOCK,
        "optimizer",
        "n",
        "n_diverged",
        "median_log10",
        "rank",
        "beaten_by",
        "point_rank",
        "note",
    ]
    frames = []
    for (problem, loss), table in _blocks(runs, value, floor):
        for a, b in itertools.combinations(table.columns, 2):
            side = divergence_winner(table[a].to_numpy(), table[b].to_numpy())
            if side:
                winner, loser = (a, b) if side == "a" else (b, a)
                names = beaten.setdefault((problem, loss, loser), [])
                names.extend([] if winner in names else [winner])
        rows = []
        for optimizer in table.columns:
            scores = table[optimizer].dropna().to_numpy()
            winners = beaten.get((problem, loss, optimizer), [])
            rows.append(
                {
                    "problem": problem,
                    "loss": loss,
                    "optimizer": optimizer,
                    "n": scores.size,
                    "n_diverged": int(np.isinf(scores).sum()),
                    "median_log10": float(np.median(scores)) if scores.size else np.nan,
                    "rank": 1 + len(winners),
                    "beaten_by": ",".join(winners),
                }
            )
        block = pd.DataFrame(rows, columns=columns[:-2])
        block["point_rank"] = (
            block["median_log10"].rank(method="min", na_option="bottom").astype(int)
        )
        block["note"] = _notes(block, table, beaten, (problem, loss), alpha)
        block = block.sort_values(["rank", "median_log10"], kind="stable", na_position="last")
        frames.append(block)
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def _notes(block: pd.DataFrame, table: pd.DataFrame, beaten: dict, key, alpha) -> list[str]:
    """Per row of ``block``: what its significance rank does not show (module doc)."""
    n = int(table.notna().sum(axis=0).max()) if table.size else 0
    k = table.shape[1]
    family = power.Family("pairwise", *key, n, k * (k - 1) // 2, alpha)
    caveat = f"not significant at n = {n}"
    if not family.can_be_significant:
        caveat += f" (no difference can be: {family.n_needed:.0f} seeds needed)"
    median = dict(zip(block["optimizer"], block["median_log10"], strict=True))
    notes = []
    for row in block.itertuples():
        parts = []
        if row.n and row.n_diverged == row.n:
            parts.append(f"diverged on all {row.n} seeds")
        ahead = []
        for other in table.columns:
            if other == row.optimizer or row.optimizer in beaten.get((*key, other), []):
                continue
            if not median[row.optimizer] < median[other]:
                continue
            x, y = table[row.optimizer].to_numpy(), table[other].to_numpy()
            shared = ~(np.isnan(x) | np.isnan(y))
            wins = int((x[shared] < y[shared]).sum())
            ahead.append(f"{other} ({wins} of {int(shared.sum())} seeds)")
        if ahead:
            parts.append(f"ahead of {', '.join(ahead)} on the median, {caveat}")
        notes.append("; ".join(parts))
    return notes


def win_probabilities(
    runs: pd.DataFrame, value: str = "final_loss", floor: float = FLOOR
) -> pd.DataFrame:
    """Per (problem, loss) and ordered pair (row, column): ``p_win``, the share
    of shared seeds where row's value is lower, ties (incl. both diverged)
    counting one half, and ``n_pairs``. The diagonal is omitted."""
    rows = []
    for (problem, loss), table in _blocks(runs, value, floor):
        values = table.to_numpy()
        for i, j in itertools.permutations(range(values.shape[1]), 2):
            row, column = values[:, i], values[:, j]
            shared = ~(np.isnan(row) | np.isnan(column))
            row, column = row[shared], column[shared]
            wins = (row < column).sum() + 0.5 * (row == column).sum()
            n = int(shared.sum())
            rows.append(
                {
                    "problem": problem,
                    "loss": loss,
                    "row": table.columns[i],
                    "column": table.columns[j],
                    "p_win": wins / n if n else np.nan,
                    "n_pairs": n,
                }
            )
    return pd.DataFrame(rows, columns=[*BLOCK, "row", "column", "p_win", "n_pairs"])


def win_matrix(probabilities: pd.DataFrame) -> pd.DataFrame:
    """Optimizer x optimizer: mean of the per-(problem, loss) ``p_win`` over the
    blocks where both ran (each block weighs the same, as in the Friedman test
    and the performance profiles). Diagonal NaN."""
    require_columns(probabilities, ["row", "column", "p_win"], "win_matrix")
    names = list(dict.fromkeys([*probabilities["row"], *probabilities["column"]]))
    matrix = probabilities.pivot_table(
        index="row", columns="column", values="p_win", aggfunc="mean"
    )
    return matrix.reindex(index=names, columns=names)


def friedman(
    runs: pd.DataFrame, value: str = "final_loss", floor: float = FLOOR
) -> tuple[pd.DataFrame, dict]:
    """Friedman test across (problem, loss) blocks on each optimizer's median
    log10 ``value`` over the evaluation seeds (diverged = +inf).

    Returns (per-optimizer ``average_rank`` (1 = best, ties averaged) with the
    number of blocks, test dict with ``statistic``, ``p_value``, ``n_blocks``,
    ``n_optimizers``, ``blocks_dropped`` and ``note``). Only blocks where every
    optimizer ran are used. scipy's test needs >= 3 optimizers and the
    chi-square approximation wants several blocks: with fewer than 3
    optimizers or 2 blocks the statistic and p-value are NaN and ``note`` says
    why (for 2 optimizers the paired tests per block answer the question).
    """
    medians = {}
    for key, table in _blocks(runs, value, floor):
        with np.errstate(invalid="ignore"):
            medians[key] = table.median(axis=0, skipna=True)
    grid = pd.DataFrame(medians).T
    complete = grid.dropna(axis=0, how="any")
    ranks = complete.apply(lambda r: pd.Series(stats.rankdata(r), index=r.index), axis=1)
    average = pd.DataFrame(
        {"optimizer": grid.columns, "average_rank": ranks.mean(axis=0).reindex(grid.columns)}
    )
    average["n_blocks"] = len(complete)
    result = {
        "statistic": np.nan,
        "p_value": np.nan,
        "n_blocks": len(complete),
        "n_optimizers": grid.shape[1],
        "blocks_dropped": len(grid) - len(complete),
        "note": "",
    }
    if grid.shape[1] < 3:
        result["note"] = "Friedman test needs >= 3 optimizers; see the paired tests per block"
    elif len(complete) < 2:
        result["note"] = "Friedman test needs >= 2 complete (problem, loss) blocks"
    else:
        surrogate = np.apply_along_axis(_finite_surrogate, 1, complete.to_numpy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-tied blocks
            test = stats.friedmanchisquare(*surrogate.T)
        result["statistic"], result["p_value"] = float(test.statistic), float(test.pvalue)
    return average.reset_index(drop=True), result
