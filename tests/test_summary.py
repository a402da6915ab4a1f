"""Summaries checked against numpy and scipy computed from the run files, and the
leaderboard's decision rules pinned with data where another rule gives another answer."""

import json
import math
import random
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optbench import cells, runfiles, summary

RUN_PATTERN = "runs/{loss}/{optimizer}/seed{seed}.tsv"


def write_grid(root, values):
    """values: {(loss, optimizer): array seeds x steps} -> (pattern, run paths in that order)."""
    pattern = str(root / RUN_PATTERN)
    paths = []
    for (loss, optimizer), array in values.items():
        for seed, row in enumerate(array):
            path = pattern.format(loss=loss, optimizer=optimizer, seed=seed)
            runfiles.write_text_atomic(path, runfiles.format_losses(row))
            paths.append(path)
    return pattern, paths


def summarize(root, values):
    """The in-process pipeline on ``values``: (step table, leaderboard)."""
    pattern, paths = write_grid(root, values)
    steps = next(iter(values.values())).shape[1]
    summary.summarize_runs(paths, pattern, steps, root / "summary")
    return read(root / "summary" / "steps.tsv"), read(root / "summary" / "leaderboard.tsv")


def read(path):
    return pd.read_csv(path, sep="\t")


def finals(*rows):
    """Two-step runs that end at the given final losses (step 0 is a common start)."""
    return np.array([[10.0, value] for value in rows])


@pytest.fixture
def grid():
    rng = np.random.default_rng(42)
    return {
        ("mse", "adam"): rng.lognormal(size=(7, 6)),
        ("mse", "sgd"): rng.lognormal(size=(7, 6)) + 1.0,
        ("l1", "adam"): rng.normal(loc=2.0, size=(7, 6)),
        ("l1", "sgd"): rng.normal(loc=1.0, size=(7, 6)),
    }


def test_step_statistics_match_numpy_and_scipy(tmp_path, grid):
    table, _ = summarize(tmp_path, grid)
    # the cell's fields as the run-path pattern names them, then the statistics
    assert list(table.columns) == ["loss", "optimizer", "step", *summary.STEP_STATISTICS]
    assert len(table) == 4 * 6
    # rows in the order of the cells given, steps ascending
    assert list(table[["loss", "optimizer"]].drop_duplicates().itertuples(index=False)) == list(
        grid
    )
    for (loss, optimizer), array in grid.items():
        rows = table[(table["loss"] == loss) & (table["optimizer"] == optimizer)]
        assert list(rows["step"]) == list(range(6))
        for step in range(6):
            column = array[:, step]
            row = rows[rows["step"] == step].iloc[0]
            n = len(column)
            sem = stats.sem(column)
            low, high = stats.t.interval(0.95, n - 1, loc=column.mean(), scale=sem)
            assert row["n"] == n and row["n_finite"] == n and row["n_diverged"] == 0
            assert row["mean"] == pytest.approx(np.mean(column), rel=1e-12)
            assert row["var"] == pytest.approx(np.var(column, ddof=1), rel=1e-12)
            assert row["std"] == pytest.approx(np.std(column, ddof=1), rel=1e-12)
            assert row["sem"] == pytest.approx(sem, rel=1e-12)
            assert row["ci95_low"] == pytest.approx(low, rel=1e-12)
            assert row["ci95_high"] == pytest.approx(high, rel=1e-12)
            assert row["median"] == pytest.approx(np.median(column), rel=1e-12)
            assert row["min"] == np.min(column) and row["max"] == np.max(column)


def test_leaderboard_ranks_by_final_mean_with_paired_test(tmp_path, grid):
    _, board = summarize(tmp_path, grid)
    assert list(board.columns) == [
        "loss",
        "optimizer",
        *summary.STEP_STATISTICS,
        "rank",
        "p_vs_best",
    ]
    assert list(board["loss"]) == ["l1", "l1", "mse", "mse"]  # losses by name, then rank
    for loss in ("mse", "l1"):
        rows = board[board["loss"] == loss].set_index("optimizer")
        ends = {opt: grid[(loss, opt)][:, -1] for opt in ("adam", "sgd")}
        best = min(ends, key=lambda opt: ends[opt].mean())
        other = "sgd" if best == "adam" else "adam"
        assert rows.loc[best, "rank"] == 1 and rows.loc[other, "rank"] == 2
        assert rows.loc[other, "mean"] == pytest.approx(ends[other].mean(), rel=1e-12)
        expected_p = stats.ttest_rel(ends[best], ends[other]).pvalue
        assert rows.loc[other, "p_vs_best"] == pytest.approx(expected_p, rel=1e-9)
        assert math.isnan(rows.loc[best, "p_vs_best"])


# Decision rules. Each fixture is built so that the documented rule and a
# plausible other rule give different answers.

# Config order zeta, alpha, ...: the two tie on the mean (both sum to 25 exactly).
RULES = {
    ("mse", "zeta"): finals(3.0, 7.0, 5.0, 4.0, 6.0),  # mean 5, median 5
    ("mse", "alpha"): finals(4.0, 6.0, 5.0, 5.5, 4.5),  # mean 5, median 5
    ("mse", "delta"): finals(6.0, 6.5, 7.0, 5.5, 6.0),  # mean 6.2, median 6
    ("mse", "outlier"): finals(1.0, 1.0, 1.0, 1.0, 100.0),  # mean 20.8, median 1
}


def test_rank_is_by_mean_final_loss_not_median_or_geometric_mean(tmp_path):
    _, board = summarize(tmp_path, RULES)
    ranks = board.set_index("optimizer")["rank"]
    # By median or geometric mean (2.5) the outlier would come first.
    assert ranks["outlier"] == 4
    assert board.set_index("optimizer").loc["outlier", "median"] == 1.0


def test_equal_means_share_the_lower_rank_and_the_next_rank_is_skipped(tmp_path):
    _, board = summarize(tmp_path, RULES)
    # method "min": not dense (delta 2), not first-come (zeta 1, alpha 2), not average (1.5)
    assert list(zip(board["optimizer"], board["rank"], strict=True)) == [
        ("alpha", 1),
        ("zeta", 1),
        ("delta", 3),
        ("outlier", 4),
    ]


def test_p_vs_best_is_against_the_first_rank_one_optimizer_by_name(tmp_path):
    _, board = summarize(tmp_path, RULES)
    p = board.set_index("optimizer")["p_vs_best"]
    alpha = RULES[("mse", "alpha")][:, -1]
    assert math.isnan(p["alpha"])
    for other in ("zeta", "delta", "outlier"):
        expected = stats.ttest_rel(alpha, RULES[("mse", other)][:, -1]).pvalue
        # against zeta (first in config order) the values would differ
        assert p[other] == pytest.approx(expected, rel=1e-12), other
    assert p["delta"] != pytest.approx(
        stats.ttest_rel(RULES[("mse", "zeta")][:, -1], RULES[("mse", "delta")][:, -1]).pvalue
    )


def test_diverged_runs_leave_the_statistics_from_their_first_nonfinite_step(tmp_path):
    values = {
        ("mse", "steady"): np.array([[10.0, 1.6, 1.6], [10.0, 1.4, 1.4]]),
        # seed 1 blows up at step 1 and comes back finite: excluded from step 1 on
        ("mse", "comeback"): np.array([[10.0, 2.0, 2.0], [10.0, math.inf, 0.5]]),
    }
    table, board = summarize(tmp_path, values)
    comeback = table[table["optimizer"] == "comeback"].set_index("step")
    assert list(comeback["n_diverged"]) == [0, 1, 1]
    assert list(comeback["mean"]) == [10.0, 2.0, 2.0]
    board = board.set_index("optimizer")
    # Counting the finite last value would give mean 1.25 and rank 1.
    assert board.loc["comeback", "mean"] == 2.0 and board.loc["comeback", "n_finite"] == 1
    assert board.loc["comeback", "rank"] == 2 and board.loc["steady", "rank"] == 1
    # Only seed 0 pairs up, so no test (the finite 0.5 of seed 1 is not used).
    assert math.isnan(board.loc["comeback", "p_vs_best"])


def test_optimizers_whose_runs_all_diverged_rank_last_together(tmp_path):
    values = {
        ("mse", "dead_nan"): np.array([[10.0, math.nan], [10.0, math.nan]]),
        ("mse", "good"): finals(1.0, 2.0),
        ("mse", "dead_inf"): np.array([[10.0, math.inf], [math.inf, math.nan]]),
        ("mse", "fair"): finals(3.0, 5.0),
    }
    table, board = summarize(tmp_path, values)
    assert list(zip(board["optimizer"], board["rank"], strict=True)) == [
        ("good", 1),
        ("fair", 2),
        ("dead_inf", 3),
        ("dead_nan", 3),
    ]
    dead = table[table["optimizer"] == "dead_inf"].set_index("step")
    assert list(dead["n_diverged"]) == [1, 2] and list(dead["n_finite"]) == [1, 0]
    assert dead.loc[0, "mean"] == 10.0 and math.isnan(dead.loc[1, "mean"])


def test_surviving_masks_from_first_nonfinite_step():
    data = np.array([[1.0, math.inf, 2.0], [1.0, 2.0, 3.0]])
    masked = cells.surviving(data)
    assert masked[0, 0] == 1.0 and np.isnan(masked[0, 1:]).all()
    assert list(masked[1]) == [1.0, 2.0, 3.0]


# Cell identity: from the paths, never from positions.


def test_cell_summary_does_not_depend_on_the_order_of_its_runs(tmp_path, grid):
    pattern, paths = write_grid(tmp_path, {("mse", "sgd"): grid[("mse", "sgd")]})
    shuffled = paths[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != paths
    identity = {"optimizer": "sgd", "loss": "mse"}  # field order is the pattern's
    cells.write_cell_summary(cells.read_cell(paths, pattern, identity, 6), tmp_path / "a.json")
    cells.write_cell_summary(cells.read_cell(shuffled, pattern, identity, 6), tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    data = json.loads((tmp_path / "a.json").read_text())
    assert list(data["cell"].items()) == [("loss", "mse"), ("optimizer", "sgd")]
    assert data["runs"]["seed"] == list(range(7))
    assert data["runs"]["final_loss"] == list(grid[("mse", "sgd")][:, -1])


def test_combined_rows_keep_their_cells_whatever_the_order_of_the_cell_files(tmp_path, grid):
    table, board = summarize(tmp_path, grid)
    cell_files = sorted((tmp_path / "summary" / "cells").rglob("*.json"))
    assert len(cell_files) == 4
    summary.summarize(cell_files[::-1], tmp_path / "steps.tsv", tmp_path / "board.tsv")
    reordered = read(tmp_path / "steps.tsv")
    key = ["loss", "optimizer", "step"]
    pd.testing.assert_frame_equal(
        table.sort_values(key).reset_index(drop=True),
        reordered.sort_values(key).reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(board, read(tmp_path / "board.tsv"))


@pytest.mark.parametrize(
    ("cell", "runs", "message"),
    [
        (
            {"loss": "mse", "optimizer": "sgd"},
            ["mse/adam/seed1"],
            "a run of {'optimizer': 'adam'}, not of the cell {'loss': 'mse', 'optimizer': 'sgd'}. "
            "Pass only the runs of this cell.",
        ),
        ({"loss": "l1", "optimizer": "sgd"}, ["mse/sgd/seed1"], "a run of {'loss': 'mse'}"),
        ({"loss": "mse", "optimizer": "sgd"}, ["mse/sgd/seed0"], "seed 0 is given twice"),
        ({"loss": "mse"}, [], "names ['loss', 'optimizer', 'seed']"),
    ],
)
def test_runs_that_are_not_of_the_cell_are_refused(tmp_path, grid, cell, runs, message):
    pattern, _ = write_grid(tmp_path, grid)
    paths = [pattern.format(loss=cell["loss"], optimizer="sgd", seed=0)]
    paths += [str(tmp_path / "runs" / f"{run}.tsv") for run in runs]
    with pytest.raises(cells.CellError, match=re.escape(message)):
        cells.read_cell(paths, pattern, cell, 6)


def test_a_path_outside_the_pattern_is_refused(tmp_path):
    with pytest.raises(
        cells.CellError,
        match="^other/seed0.tsv: not a run file of the pattern .*"
        r"\. Pass only run files that the pipeline wrote\.$",
    ):
        cells.parse_run_path("results/runs/{loss}/{optimizer}/seed{seed}.tsv", "other/seed0.tsv")
    assert cells.parse_run_path(
        "results/runs/{loss}/{optimizer}/seed{seed}.tsv", "results/runs/l1/sgd/seed12.tsv"
    ) == {"loss": "l1", "optimizer": "sgd", "seed": "12"}


def test_a_cell_given_twice_is_refused(tmp_path, grid):
    summarize(tmp_path, grid)
    cell = tmp_path / "summary" / "cells" / "evaluation" / "mse" / "sgd.json"
    # the message names the file given twice (both times)
    with pytest.raises(cells.CellError, match=f"^{cell}: the cell .* is also in {cell}.$"):
        summary.summarize([cell, cell], tmp_path / "steps.tsv", tmp_path / "board.tsv")
    assert not (tmp_path / "steps.tsv").exists()


def test_cell_summary_is_strict_json_that_reads_back_every_value_exactly(tmp_path):
    values = np.array([[1.0, 0.1 + 0.2, 1e-300], [2.0, math.inf, math.nan]])
    pattern, paths = write_grid(tmp_path, {("mse", "sgd"): values})
    cell = cells.read_cell(paths, pattern, {"loss": "mse", "optimizer": "sgd"}, 3)
    cells.write_cell_summary(cell, tmp_path / "cell.json")
    text = (tmp_path / "cell.json").read_text()

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    json.loads(text, parse_constant=refuse)
    back = cells.read_cell_summary(tmp_path / "cell.json")
    assert back["runs"]["final_loss"][0] == 1e-300 and math.isnan(back["runs"]["final_loss"][1])
    assert back["runs"]["first_nonfinite_step"] == [None, 1]
    assert back["steps"]["mean"][1] == 0.1 + 0.2 and back["steps"]["n_finite"] == [2, 1, 1]
    assert '"n_finite": [2, 1, 1]' in text  # counts are JSON integers, not 2.0
    assert math.isnan(back["steps"]["var"][2])


def test_malformed_run_stops_aggregation_with_file_and_line(tmp_path, grid):
    pattern, paths = write_grid(tmp_path, grid)
    bad = paths[3]
    with open(bad, "a") as handle:
        handle.write("6\tnot-a-number\t1\n")
    with pytest.raises(
        runfiles.RunFileError, match=f"{bad}:8: loss .not-a-number. is not a number"
    ):
        summary.summarize_runs(paths, pattern, 6, tmp_path / "summary")
    assert not (tmp_path / "summary" / "steps.tsv").exists()


def test_first_nonfinite_steps_agree_with_the_run_file_rule():
    losses = np.array(
        [[1.0, 2.0, 3.0], [1.0, math.nan, 2.0], [math.inf, 1.0, 1.0], [1.0, 1.0, -math.inf]]
    )
    expected = [runfiles.first_nonfinite_step(row) for row in losses]
    assert cells.first_nonfinite_steps(losses) == expected == [None, 1, 0, 2]


SWEEP_PATTERN = "runs/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv"


def write_roles(root, values):
    """values: {(role, optimizer, variant): finals by seed} -> cell summary paths by role."""
    by_role: dict[str, list] = {"evaluation": [], "tuning": []}
    for (role, optimizer, variant), final_losses in values.items():
        seeds = (
            range(100, 100 + len(final_losses)) if role == "tuning" else range(len(final_losses))
        )
        paths = []
        for seed, final in zip(seeds, final_losses, strict=True):
            path = str(root / SWEEP_PATTERN).format(
                problem="p", loss="mse", optimizer=optimizer, variant=variant, seed=seed
            )
            # a pair is the whole two-step run, a number its final loss after 10.0
            run = list(final) if isinstance(final, tuple) else [10.0, final]
            runfiles.write_text_atomic(path, runfiles.format_losses(run))
            paths.append(path)
        identity = {"problem": "p", "loss": "mse", "optimizer": optimizer, "variant": variant}
        cell = cells.read_cell(paths, str(root / SWEEP_PATTERN), identity, 2)
        out = root / "cells" / role / f"{optimizer}-{variant}.json"
        cells.write_cell_summary(cell, out)
        by_role[role].append(out)
    return by_role


def test_variants_are_picked_on_tuning_seeds_only(tmp_path):
    """A planted case: on the evaluation seeds lr0.1 would win, on the tuning seeds
    lr0.01 does; the leaderboard must report lr0.01 (no selection bias)."""
    values = {
        ("tuning", "sgd", "lr0.01"): [1e-4, 1e-4, 1e-3],
        ("tuning", "sgd", "lr0.1"): [1e-2, 1e-3, 1e-2],
        ("tuning", "sgd", "lr1.0"): [math.inf, 1e-9, math.inf],  # diverged twice: +inf
        ("evaluation", "sgd", "base"): [5e-3, 5e-3, 5e-3],
        ("evaluation", "sgd", "lr0.01"): [2e-3, 3e-3, 4e-3],
        ("evaluation", "sgd", "lr0.1"): [1e-6, 1e-6, 1e-6],
        ("evaluation", "sgd", "lr1.0"): [1e-9, 1e-9, 1e-9],
        ("evaluation", "adam", "base"): [1e-5, 1e-5, 1e-5],
    }
    paths = write_roles(tmp_path, values)
    summary.summarize(
        paths["evaluation"],
        tmp_path / "steps.tsv",
        tmp_path / "board.tsv",
        tmp_path / "selection.tsv",
        paths["tuning"],
    )
    selection = read(tmp_path / "selection.tsv")
    assert list(selection["optimizer"]) == ["sgd", "adam"]  # the order the cells are given
    selection = selection.set_index("optimizer")
    assert selection.loc["sgd", "variant"] == "lr0.01"
    assert selection.loc["sgd", "n_tuning"] == 3
    assert selection.loc["sgd", "median_log10_final"] == pytest.approx(-4.0)
    assert selection.loc["adam", "variant"] == "base" and selection.loc["adam", "n_tuning"] == 0
    board = read(tmp_path / "board.tsv").set_index("optimizer")
    assert board.loc["sgd", "variant"] == "lr0.01" and board.loc["adam", "rank"] == 1
    assert board.loc["sgd", "mean"] == pytest.approx(3e-3)


def test_equal_tuning_scores_pick_the_variant_listed_first(tmp_path):
    values = {
        ("tuning", "sgd", "lr0.1"): [1e-3, 1e-3],
        ("tuning", "sgd", "lr0.01"): [1e-3, 1e-3],
        ("evaluation", "sgd", "lr0.1"): [1.0, 1.0],
        ("evaluation", "sgd", "lr0.01"): [1.0, 1.0],
    }
    paths = write_roles(tmp_path, values)
    summary.summarize(
        paths["evaluation"],
        tmp_path / "steps.tsv",
        tmp_path / "board.tsv",
        tmp_path / "selection.tsv",
        paths["tuning"],
    )
    assert list(read(tmp_path / "selection.tsv")["variant"]) == ["lr0.1"]


def test_a_diverged_tuning_run_counts_as_inf_even_when_it_ends_finite(tmp_path):
    # lr1.0 blows up at step 0 on two of three tuning seeds and then ends at 1e-9:
    # scored by its final values it would win (median -9); as +inf it loses.
    # lr0.1 reaches exactly 0 on one seed: log10 gives -inf there, silently.
    values = {
        ("tuning", "sgd", "lr0.1"): [1e-2, 0.0, 1e-3],
        ("tuning", "sgd", "lr1.0"): [(math.inf, 1e-9), (math.nan, 1e-9), 1e-9],
        ("evaluation", "sgd", "lr0.1"): [1.0, 1.0],
        ("evaluation", "sgd", "lr1.0"): [1.0, 1.0],
    }
    paths = write_roles(tmp_path, values)
    steps, _ = summary.combine(paths["evaluation"])
    tuning = summary.combine(paths["tuning"])[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selection = summary.select_variants(steps, tuning)
    assert list(selection["variant"]) == ["lr0.1"]
    assert selection.loc[0, "median_log10_final"] == pytest.approx(-3.0)
    assert selection.loc[0, "n_tuning"] == 3


def test_without_tuning_runs_the_base_variant_or_the_first_is_kept(tmp_path):
    values = {
        ("evaluation", "sgd", "lr0.1"): [1.0, 2.0],
        ("evaluation", "sgd", "lr0.01"): [0.5, 0.5],
        ("evaluation", "adam", "lr0.1"): [1.0, 2.0],
        ("evaluation", "adam", "base"): [3.0, 3.0],
    }
    steps, _ = summary.combine(write_roles(tmp_path, values)["evaluation"])
    selection = summary.select_variants(steps, None)
    assert list(zip(selection["optimizer"], selection["variant"], strict=True)) == [
        ("sgd", "lr0.1"),
        ("adam", "base"),
    ]
    assert list(selection["n_tuning"]) == [0, 0]
    assert all(math.isnan(value) for value in selection["median_log10_final"])


def test_a_grid_without_variants_keeps_every_cell_unscored(tmp_path, grid):
    summarize(tmp_path, grid)
    # summarize_runs writes the selection beside the other tables
    written = read(tmp_path / "summary" / "selection.tsv")
    # a missing value is written as nan, not as an empty field
    lines = (tmp_path / "summary" / "selection.tsv").read_text().splitlines()
    assert lines[1] == "mse\tadam\t0\tnan"
    assert list(written.columns) == ["loss", "optimizer", "n_tuning", "median_log10_final"]
    assert list(written.itertuples(index=False, name=None))[0][:3] == ("mse", "adam", 0)
    steps, runs = summary.combine(sorted((tmp_path / "summary" / "cells").rglob("*.json")))
    # rows numbered afresh, as one table (not the index of each cell's own table)
    assert list(steps.index) == list(range(4 * 6)) and list(runs.index) == list(range(4 * 7))
    selection = summary.select_variants(steps, None)
    assert len(selection) == 4 and list(selection["n_tuning"]) == [0, 0, 0, 0]
    assert all(math.isnan(value) for value in selection["median_log10_final"])


def test_no_cell_summaries_is_an_error_that_says_so():
    with pytest.raises(cells.CellError, match="^no cell summaries given.$"):
        summary.combine([])


def test_summarize_runs_checks_the_step_count(tmp_path, grid):
    pattern, paths = write_grid(tmp_path, grid)
    with pytest.raises(runfiles.RunFileError, match="expected 7 steps, found 6"):
        summary.summarize_runs(paths, pattern, 7, tmp_path / "summary")


def test_confidence_interval_of_two_runs_uses_one_degree_of_freedom(tmp_path):
    values = {("mse", "sgd"): np.array([[1.0, 2.0], [3.0, 7.0]])}
    table, _ = summarize(tmp_path, values)
    last = table[table["step"] == 1].iloc[0]
    low, high = stats.t.interval(0.95, 1, loc=4.5, scale=stats.sem([2.0, 7.0]))
    assert (last["ci95_low"], last["ci95_high"]) == (pytest.approx(low), pytest.approx(high))


def test_three_equal_means_all_rank_first_and_ranks_are_integers(tmp_path):
    values = {
        ("mse", "c"): finals(1.0, 3.0),
        ("mse", "a"): finals(2.0, 2.0),
        ("mse", "b"): finals(3.0, 1.0),
        ("mse", "d"): finals(5.0, 6.0),
    }
    _, board = summarize(tmp_path, values)
    # "min" gives 1, 1, 1, 4 (an average rank would give 2, 2, 2, 4)
    assert list(zip(board["optimizer"], board["rank"], strict=True)) == [
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("d", 4),
    ]
    assert board["rank"].dtype.kind == "i"  # written as 1, not 1.0


def test_p_vs_best_leaves_out_every_run_that_diverged(tmp_path):
    values = {
        ("mse", "best"): np.array([[10.0, 1.0, 1.0], [10.0, 2.0, 2.0], [10.0, 3.0, 3.0]]),
        # seed 1 diverges at step 1 and ends finite: only seeds 0 and 2 pair up
        ("mse", "other"): np.array([[10.0, 2.5, 2.5], [10.0, math.inf, 0.5], [10.0, 3.1, 3.7]]),
    }
    _, board = summarize(tmp_path, values)
    p = board.set_index("optimizer")["p_vs_best"]
    assert p["other"] == pytest.approx(stats.ttest_rel([1.0, 3.0], [2.5, 3.7]).pvalue)


def test_paired_p_pairs_the_seeds_both_have_finite():
    best = {0: 1.0, 1: math.nan, 2: 2.0, 3: 4.0, 4: 3.0}
    other = {0: 1.5, 1: 2.0, 2: 2.2, 3: math.inf, 5: 9.0}
    # seeds 0 and 2 only: two pairs are enough for a test
    assert summary.paired_p(best, other) == pytest.approx(
        stats.ttest_rel([1.0, 2.0], [1.5, 2.2]).pvalue, rel=1e-12
    )
    assert math.isnan(summary.paired_p({0: 1.0, 1: 2.0}, {0: 1.5}))
    # identical pairs: no difference at all, p = 1 (scipy would give NaN)
    assert summary.paired_p({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}) == 1.0


def test_no_runs_for_a_cell_is_an_error_naming_the_cell(tmp_path):
    with pytest.raises(
        cells.CellError,
        match=r"^no run files given for the cell \{'loss': 'mse', 'optimizer': 'sgd'\}\.$",
    ):
        cells.read_cell([], RUN_PATTERN, {"optimizer": "sgd", "loss": "mse"}, 6)


def test_cell_summary_text_refuses_a_nan_that_would_make_it_non_standard_json():
    # cell_summary turns non-finite floats into strings; the writer still refuses any left
    with pytest.raises(ValueError):
        cells.format_cell_summary({"cell": {}, "steps": {"mean": [math.nan]}, "runs": {}})


def test_the_base_variant_is_no_candidate_beside_a_sweep(tmp_path):
    # base scores best on the tuning seeds, but with a sweep only swept variants compete
    values = {
        ("tuning", "sgd", "base"): [1e-9, 1e-9],
        ("tuning", "sgd", "lr0.1"): [1e-3, 1e-3],
        ("evaluation", "sgd", "base"): [1.0, 1.0],
        ("evaluation", "sgd", "lr0.1"): [1.0, 1.0],
    }
    paths = write_roles(tmp_path, values)
    steps, _ = summary.combine(paths["evaluation"])
    selection = summary.select_variants(steps, summary.combine(paths["tuning"])[1])
    assert list(selection["variant"]) == ["lr0.1"]
    assert selection.loc[0, "median_log10_final"] == pytest.approx(-3.0)
