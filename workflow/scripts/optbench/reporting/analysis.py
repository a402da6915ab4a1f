"""Every table of the analysis, from the cell summaries, in one process.

``build_tables`` is what the pipeline's ``summarize`` rule runs (and what a
benchmark or a test can run in-process): it joins the cell summaries into the
step table and the per-run metrics table, then makes every comparison table
from the per-run table, on the right scale (log10 of the loss; a diverged run
counts as +inf in rank-based statistics). Order of work, and what each table
answers:

1. ``runs``: one row per run (both seed roles, every variant): the metrics of
   ``optbench.reporting.runmetrics``, oscillation, held-out loss/accuracy.
2. ``steps``: per (cell, step) on the evaluation seeds, arithmetic and
   log-space statistics (``optbench.reporting.summary``).
3. ``selection``: each (problem, loss, optimizer)'s variant, picked on the
   TUNING seeds only (``optbench.reporting.selection.select_variants``; candidates: the
   swept variants where there is a sweep, else ``base``; ties go to the
   smaller value, ``order``). Everything below uses the evaluation seeds of the
   chosen variants, so it carries no selection bias.
4. ``sensitivity``: final loss of every variant (learning-rate sensitivity).
5. ``candidates``, ``tuning_gain`` (one-shot base vs tuned, paired by seed) and
   ``best_of_k`` (expected result of a k-trial tuner): what tuning bought.
6. ``pairwise`` (every pair per (problem, loss): Wilcoxon/sign test, Holm,
   rank-biserial, exact order-statistic CI of the median paired difference) and
   ``leaderboard`` (ranking with ties by those tests, with the final loss's
   log-space statistics and the share of runs that reached the threshold).
7. Across problems: ``ratios`` and ``profiles`` (Dolan-More performance
   profiles on steps and on loss evaluations to threshold), ``profile_scores`` (B_s), ``friedman``
   (average ranks and the test), ``win_probabilities`` and ``win_matrix``.
8. ``claims``: the reference article's three testable claims, two published
   findings on tuning (``literature``) and two on scale (``scaling_claims``).
9. ``power``: per family of tests, the smallest p-value it can reach with
   these seeds after its correction (``optbench.reporting.power``).
10. ``scaling`` and ``rank_flips``: across the sizes and budgets of a problem
    entry with ``sizes:`` or ``budgets:`` (``optbench.reporting.scaling``).

Selection and every rank statistic judge each run by the configured ranking
metric (``optbench.reporting.ranking_metric``: by default the held-out loss
where a problem has held-out data, else the final training loss); a run
whose training loss went non-finite is worse than any finite one throughout.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from optbench import grid
from optbench.reporting import (
    baseline,
    claims,
    comparison,
    literature,
    outputs,
    perfprofiles,
    power,
    ranking_metric,
    scaling,
    scaling_claims,
    selection,
    statistics,
    summary,
)
from optbench.reporting.analysis_context import BASE_VARIANT, Context

# An entry: an optimizer on one (problem, loss) (grid.ENTRY_FIELDS).
ENTRY = list(grid.ENTRY_FIELDS)
# Table name -> file name under results/summary/ (declared in optbench.reporting.outputs).
TABLE_FILES = outputs.TABLE_FILES


# A run-path pattern without these fields (tools, tests) has one problem and
# one variant per optimizer: they get these values.
IMPLIED_FIELDS = {"problem": "default", "variant": BASE_VARIANT}


def _with_identity(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every field of ``summary.IDENTITY``, in that order, first."""
    missing = [name for name in summary.IDENTITY if name not in table.columns]
    if not missing:
        return table
    table = table.assign(**{name: IMPLIED_FIELDS[name] for name in missing})
    first = [c for c in ["role", *summary.IDENTITY] if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def candidate_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of tuning candidates: where a (problem, loss, optimizer) has swept
    variants, those; else its only variant (``base``)."""
    swept = (runs["variant"] != BASE_VARIANT).groupby([runs[c] for c in ENTRY]).transform("any")
    return runs[~(swept & (runs["variant"] == BASE_VARIANT))].reset_index(drop=True)


def _leaderboard(
    chosen: pd.DataFrame, ranking: pd.DataFrame, choice: pd.DataFrame, used: dict | None = None
):
    finals = statistics.log_summary_table(chosen, ENTRY, "final_loss")
    reached = chosen.assign(
        _reached=chosen["steps_to_threshold"].notna(),
        _targeted=chosen["heldout_target_loss"].notna() | chosen["heldout_target_accuracy"].notna(),
        _hit=chosen["steps_to_heldout_target"].notna(),
    )

    def censored_median(steps):  # a run that never reached it counts as infinitely slow
        return steps.fillna(np.inf).median()

    extra = reached.groupby(ENTRY, sort=False).agg(
        n_reached=("_reached", "sum"),
        median_steps_to_threshold=("steps_to_threshold", censored_median),
        heldout_loss_median=("heldout_loss", "median"),
        heldout_accuracy_median=("heldout_accuracy", "median"),
        n_at_floor=("at_floor", "sum"),
        resolution_floor=("resolution_floor", "max"),
        _targeted=("_targeted", "any"),
        _n_hit=("_hit", "sum"),
        median_steps_to_heldout_target=("steps_to_heldout_target", censored_median),
    )
    size = reached.groupby(ENTRY, sort=False).size()
    extra["share_reached"] = extra["n_reached"] / size
    extra["share_at_floor"] = extra.pop("n_at_floor") / size
    # Without a held-out target both say nothing: NaN, not 0 and inf.
    targeted = extra.pop("_targeted")
    extra["share_heldout_target"] = (extra.pop("_n_hit") / size).where(targeted)
    extra["median_steps_to_heldout_target"] = extra["median_steps_to_heldout_target"].where(
        targeted
    )
    extra = extra.reset_index()
    board = ranking.merge(choice[[*ENTRY, "variant"]], on=ENTRY, how="left")
    keys = zip(board["problem"], board["loss"], strict=True)
    metric = [(used or {}).get(key, "final_loss") for key in keys]
    board.insert(board.columns.get_loc("median_log10") + 1, "ranking_metric", metric)
    board = board.merge(finals.drop(columns=["n", "n_diverged"]), on=ENTRY, how="left")
    board = board.merge(extra, on=ENTRY, how="left")
    first = [
        *ENTRY,
        "variant",
        "rank",
        "point_rank",
        "beaten_by",
        "note",
        "n",
        "n_diverged",
        "median_log10",
        "ranking_metric",
    ]
    return board[first + [c for c in board.columns if c not in first]]


# Performance profiles on two costs: steps (updates) and loss evaluations
# (L-BFGS evaluates the loss several times per step), both to the threshold;
# and, over the (problem, loss) pairs that have one, steps to the held-out target.
PROFILE_COSTS = {
    "steps": "steps_to_threshold",
    "evaluations": "evaluations_to_threshold",
    "time": "time_to_threshold",
    "heldout_steps": "steps_to_heldout_target",
    "heldout_time": "time_to_heldout_target",
}
# Costs measured on the held-out data: over the pairs that have a target only.
HELDOUT_COSTS = {"steps_to_heldout_target", "time_to_heldout_target"}


def _profiles(chosen: pd.DataFrame):
    ratio_frames, profile_frames, score_frames = [], [], []
    targeted = chosen["heldout_target_loss"].notna() | chosen["heldout_target_accuracy"].notna()
    for cost_name, column in PROFILE_COSTS.items():
        rows = chosen[targeted] if column in HELDOUT_COSTS else chosen
        if rows.empty or (column.startswith("time") and rows["seconds_per_step"].isna().all()):
            continue  # no held-out target; no step timing (runs of an older version)
        # A run that met the threshold before any update counts one step: a
        # cost of 0 has no ratio (perfprofiles), and no optimizer did anything.
        one_step = rows["seconds_per_step"] if column.startswith("time") else 1.0
        kept = (rows[column] > 0) | rows[column].isna()  # NaN: never reached, stays so
        costs_input = rows.assign(**{column: rows[column].where(kept, one_step)})
        costs = perfprofiles.block_costs(costs_input, column)
        ratios = perfprofiles.performance_ratios(costs)
        profile = perfprofiles.performance_profile(ratios)
        scores = perfprofiles.profile_score(ratios)
        long_ratios = (
            costs.stack(future_stack=True)
            .rename("median_cost")
            .to_frame()
            .join(ratios.stack(future_stack=True).rename("ratio"))
            .reset_index()
        )
        ratio_frames.append(long_ratios.assign(cost=cost_name))
        profile_frames.append(
            profile.reset_index()
            .melt(id_vars="tau", var_name="optimizer", value_name="rho")
            .assign(cost=cost_name)
        )
        score_frames.append(
            pd.DataFrame(
                {
                    "cost": cost_name,
                    "optimizer": scores.index,
                    "score": scores.to_numpy(),
                    "r_max": perfprofiles.R_MAX,
                    "n_blocks": len(ratios),
                    "n_fastest": (ratios == 1.0).sum(axis=0).to_numpy(),
                    "n_reached": np.isfinite(ratios).sum(axis=0).to_numpy(),
                }
            )
        )
    first = lambda frame: frame[["cost", *(c for c in frame.columns if c != "cost")]]  # noqa: E731
    return (
        first(pd.concat(ratio_frames, ignore_index=True)),
        first(pd.concat(profile_frames, ignore_index=True)),
        pd.concat(score_frames, ignore_index=True),
    )


def _sensitivity(
    runs: pd.DataFrame, candidates: pd.DataFrame, context: Context, choice=None
) -> pd.DataFrame:
    """The sensitivity table: one row per variant and swept hyper-parameter
    (``parameter``, its ``value``; a variant without swept values has one row
    with parameter "" and value NaN), ``candidate`` and ``selected`` flags."""
    table = selection.sensitivity_table(runs)
    keys = [tuple(row) for row in table[[*ENTRY, "variant"]].to_numpy()]
    candidate_keys = set(map(tuple, candidates[[*ENTRY, "variant"]].drop_duplicates().to_numpy()))
    chosen = set() if choice is None else set(map(tuple, choice[[*ENTRY, "variant"]].to_numpy()))
    table.insert(4, "candidate", [key in candidate_keys for key in keys])
    table.insert(5, "selected", [key in chosen for key in keys])
    values = [context.swept.get(variant, {}) for variant in table["variant"]]
    table.insert(6, "swept", [",".join(f"{k}={v}" for k, v in v.items()) for v in values])
    pairs = [
        [(name, float(value)) for name, value in sorted(v.items()) if _is_number(value)]
        or [("", math.nan)]
        for v in values
    ]
    table.insert(7, "parameter", [[name for name, _ in p] for p in pairs])
    table.insert(8, "value", [[value for _, value in p] for p in pairs])
    return table.explode(["parameter", "value"], ignore_index=True).astype({"value": float})


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def build_tables(cell_paths, tuning_paths=(), context: Context | dict | None = None) -> dict:
    """Every table of the analysis (module doc), by name, from the cell summaries."""
    if not isinstance(context, Context):
        context = Context.from_dict(context)
    steps, evaluation = summary.combine(cell_paths, selection.EVALUATION)
    frames = [evaluation]
    if len(tuning_paths):
        frames.append(summary.combine(tuning_paths, selection.TUNING)[1])
    runs = _with_identity(pd.concat(frames, ignore_index=True))
    steps = _with_identity(steps)
    # Selection and ranking judge by the configured metric (ranking_metric.VALUE).
    judged, used = ranking_metric.with_ranking_value(runs, context.ranking_metric)
    value = ranking_metric.VALUE
    candidates = candidate_runs(judged)
    order = context.order
    if order is not None:
        order = [*order, *(v for v in dict.fromkeys(runs["variant"]) if v not in order)]
    choice = selection.select_variants(candidates, order, value=value)
    # tune_at: untuned sizes and budgets take the setting of the nearest tuned one.
    choice = scaling.transfer_selection(choice, context.scaling)
    chosen = selection.tuned_evaluation_runs(judged, choice)
    pairwise = comparison.pairwise_table(chosen, value)
    ranking = comparison.ranking_table(chosen, pairwise, value)
    ratios, profiles, scores = _profiles(chosen)
    average_ranks, test = comparison.friedman(chosen, value)
    friedman_table = average_ranks.assign(**{k: [v] * len(average_ranks) for k, v in test.items()})
    probabilities = comparison.win_probabilities(chosen, value)
    matrix = comparison.win_matrix(probabilities)
    matrix = matrix.rename_axis(index="optimizer", columns=None).reset_index()
    base_runs = runs[(runs["variant"] == BASE_VARIANT) & (runs["role"] == selection.EVALUATION)]
    # The article's claims are about its settings: re-checked on those where tuning
    # chose others (claims.article_claims).
    claim_rows = claims.article_claims(
        chosen, base_runs, context.mse_block, context.l1_block, context.claims_steps
    )
    choice = choice.assign(range_edge=selection.range_edges(choice, candidates, context.swept))
    budgets = selection.at_budgets(selection.tuning_curve(candidates, order, value=value))
    # Two published findings beside the article's claims (optbench.reporting.literature).
    published = literature.literature_claims(
        budgets, runs, choice, context.classes, context.baseline
    )
    claim_rows = pd.concat([claim_rows, published], ignore_index=True)
    # Across sizes and budgets (optbench.reporting.scaling): empty without a family.
    scaling_table = scaling.speedup_table(chosen, context.scaling, context.baseline, used)
    chosen_steps = steps.merge(choice[[*ENTRY, "variant"]], on=[*ENTRY, "variant"])
    curves = scaling.curve_table(cell_paths, choice) if context.scaling else None
    flips = scaling.rank_flip_table(chosen, chosen_steps, context.scaling, used, curves)
    at_scale = scaling_claims.scaling_claims(
        chosen, flips, context.scaling, context.baseline, context.classes, curves
    )
    claim_rows = pd.concat([claim_rows, at_scale], ignore_index=True)
    return {
        "runs": runs[summary.RUN_TABLE_COLUMNS],
        "steps": steps,
        "selection": choice,
        "sensitivity": _sensitivity(runs, candidates, context, choice),
        "candidates": selection.candidate_counts(candidates),
        "tuning_gain": selection.tuning_gain(judged, choice, BASE_VARIANT, value=value),
        "best_of_k": budgets,
        "pairwise": pairwise,
        "leaderboard": _leaderboard(chosen, ranking, choice, used),
        "power": power_table(chosen, choice, context),
        "baseline": baseline.baseline_table(chosen, context.baseline),
        "ratios": ratios,
        "profiles": profiles,
        "profile_scores": scores,
        "friedman": friedman_table,
        "win_probabilities": probabilities,
        "win_matrix": matrix,
        "claims": claim_rows,
        "scaling": scaling_table,
        "rank_flips": flips,
    }


def power_table(chosen: pd.DataFrame, choice: pd.DataFrame, context: Context) -> pd.DataFrame:
    """``power.tsv``: per family of tests the analysis made, the smallest p-value
    it can reach with the evaluation seeds it had (``optbench.reporting.power``)."""
    blocks, seeds = {}, {}
    for key, block in chosen.groupby(["problem", "loss"], sort=False):
        blocks[key] = block["optimizer"].nunique()
        seeds[key] = int(block.groupby("optimizer")["seed"].nunique().max())
    tuned = choice[choice["n_candidates"] > 1].groupby(["problem", "loss"], sort=False).size()
    families = power.families_for(
        blocks,
        seeds,
        baseline=bool(context.baseline) and context.baseline in set(chosen["optimizer"]),
        swept={key: int(count) for key, count in tuned.items()},
    )
    return pd.DataFrame(power.table_rows(families), columns=power.COLUMNS)


def divergence_lines(runs: pd.DataFrame) -> list[str]:
    """One line per (problem, loss, optimizer, variant) with a diverged run (a
    non-finite training loss): how many of its runs, and the first such step."""
    bad = runs[runs["first_nonfinite_step"].notna()]
    lines = []
    totals = runs.groupby(summary.IDENTITY, sort=False).size()
    for key, group in bad.groupby(summary.IDENTITY, sort=False):
        roles = group["role"].value_counts() if "role" in group.columns else {}
        split = ", ".join(f"{count} {role}" for role, count in roles.items())
        lines.append(
            f"diverged: {'/'.join(map(str, key))}: {len(group)} of {totals[key]} runs"
            f"{f' ({split})' if split else ''}, first non-finite loss at step "
            f"{int(group['first_nonfinite_step'].min())}"
        )
    return lines


def range_edge_warnings(choice: pd.DataFrame) -> list[str]:
    """One line per entry whose chosen value is at an edge of its tried range."""
    return [
        f"warning: {row.problem}/{row.loss}/{row.optimizer} chose {row.range_edge}: the best "
        "setting may lie outside the range; widen it"
        for row in choice.itertuples(index=False)
        if row.range_edge
    ]


def write_tables(tables: dict, folder=None, paths: dict | None = None) -> None:
    """Each table as TSV: at ``paths[name]``, or ``folder/TABLE_FILES[name]``."""
    for name, table in tables.items():
        path = paths[name] if paths is not None else Path(folder) / TABLE_FILES[name]
        summary.write_tsv(table, path)


def summarize_runs(run_paths, pattern: str, steps: int, summary_dir) -> dict:
    """What the rules do, in one process: a summary per cell, then every table.

    For tools and tests that train in-process, with evaluation seeds only (so
    each optimizer keeps its base variant). Returns the tables by name.
    """
    cell_paths = summary.summarize_cells(run_paths, pattern, steps, summary_dir)
    tables = build_tables(cell_paths)
    write_tables(tables, Path(summary_dir))
    return tables
