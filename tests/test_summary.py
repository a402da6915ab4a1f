"""Summaries checked against numpy and scipy computed from the run files, and the
leaderboard's decision rules pinned with data where another rule gives another answer."""

import json
import math
import random
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optbench import runfiles
from optbench.reporting import cells, summary

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
    """The cell jobs and the combine step in-process on ``values``: (step table, run table)."""
    pattern, paths = write_grid(root, values)
    steps = next(iter(values.values())).shape[1]
    cell_paths = summary.summarize_cells(paths, pattern, steps, root / "summary")
    return summary.combine(cell_paths)


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
        ("l1", "adam"): np.abs(rng.normal(loc=2.0, size=(7, 6))),
        ("l1", "sgd"): np.abs(rng.normal(loc=1.0, size=(7, 6))),
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
            assert row["min"] == np.min(column) and row["max"] == np.max(column)
            # log space: the geometric mean with the t interval of the log10 values,
            # the median with scipy's distribution-free interval (7 runs: min and max)
            logs = np.log10(column)
            log_low, log_high = stats.t.interval(
                0.95, n - 1, loc=logs.mean(), scale=stats.sem(logs)
            )
            assert row["geo_mean"] == pytest.approx(stats.gmean(column), rel=1e-12)
            assert row["geo_low"] == pytest.approx(10**log_low, rel=1e-12)
            assert row["geo_high"] == pytest.approx(10**log_high, rel=1e-12)
            assert row["median"] == pytest.approx(np.median(column), rel=1e-12)
            interval = stats.quantile_test(column, q=np.median(column)).confidence_interval()
            assert row["median_low"] == pytest.approx(interval.low, rel=1e-12)
            assert row["median_high"] == pytest.approx(interval.high, rel=1e-12)
            assert row["median_coverage"] == pytest.approx(1 - 2 / 2**7, rel=1e-12)


def test_diverged_runs_leave_the_statistics_from_their_first_nonfinite_step(tmp_path):
    values = {
        ("mse", "steady"): np.array([[10.0, 1.6, 1.6], [10.0, 1.4, 1.4]]),
        # seed 1 blows up at step 1 and comes back finite: excluded from step 1 on
        ("mse", "comeback"): np.array([[10.0, 2.0, 2.0], [10.0, math.inf, 0.5]]),
    }
    table, runs = summarize(tmp_path, values)
    comeback = table[table["optimizer"] == "comeback"].set_index("step")
    assert list(comeback["n_diverged"]) == [0, 1, 1]
    # Counting the finite last value would give mean 1.25 and geometric mean 1.
    assert list(comeback["mean"]) == [10.0, 2.0, 2.0]
    assert list(comeback["geo_mean"]) == pytest.approx([10.0, 2.0, 2.0], rel=1e-12)
    # The run's final loss is NaN (diverged), not the 0.5 it ended at.
    final = runs[runs["optimizer"] == "comeback"].set_index("seed")["final_loss"]
    assert final[0] == 2.0 and math.isnan(final[1])


def test_a_cell_whose_runs_all_diverged_has_no_statistics_from_then_on(tmp_path):
    values = {
        ("mse", "dead_nan"): np.array([[10.0, math.nan], [10.0, math.nan]]),
        ("mse", "good"): finals(1.0, 2.0),
        ("mse", "dead_inf"): np.array([[10.0, math.inf], [math.inf, math.nan]]),
        ("mse", "fair"): finals(3.0, 5.0),
    }
    table, _ = summarize(tmp_path, values)
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
    table, runs = summarize(tmp_path, grid)
    cell_files = sorted((tmp_path / "summary" / "cells").rglob("*.json"))
    assert len(cell_files) == 4
    reordered, reordered_runs = summary.combine(cell_files[::-1])
    for before, after, key in (
        (table, reordered, ["loss", "optimizer", "step"]),
        (runs, reordered_runs, ["loss", "optimizer", "seed"]),
    ):
        pd.testing.assert_frame_equal(
            before.sort_values(key).reset_index(drop=True),
            after.sort_values(key).reset_index(drop=True),
        )


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
        summary.combine([cell, cell])


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
    assert math.isnan(back["runs"]["first_nonfinite_step"][0])
    assert back["runs"]["first_nonfinite_step"][1] == 1
    assert back["steps"]["mean"][1] == 0.1 + 0.2 and back["steps"]["n_finite"] == [2, 1, 1]
    assert '"n_finite": [2, 1, 1]' in text  # counts are JSON integers, not 2.0
    assert math.isnan(back["steps"]["var"][2])


def test_malformed_run_stops_aggregation_with_file_and_line(tmp_path, grid):
    pattern, paths = write_grid(tmp_path, grid)
    bad = paths[3]
    with open(bad, "a") as handle:
        handle.write("6\tnot-a-number\t1\t\n")
    with pytest.raises(
        runfiles.RunFileError, match=f"{bad}:8: loss .not-a-number. is not a number"
    ):
        summary.summarize_cells(paths, pattern, 6, tmp_path / "summary")


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


def test_combined_tables_are_numbered_afresh(tmp_path, grid):
    summarize(tmp_path, grid)
    steps, runs = summary.combine(sorted((tmp_path / "summary" / "cells").rglob("*.json")))
    # rows numbered afresh, as one table (not the index of each cell's own table)
    assert list(steps.index) == list(range(4 * 6)) and list(runs.index) == list(range(4 * 7))


def test_no_cell_summaries_is_an_error_that_says_so():
    with pytest.raises(cells.CellError, match="^no cell summaries given.$"):
        summary.combine([])


def test_summarize_runs_checks_the_step_count(tmp_path, grid):
    pattern, paths = write_grid(tmp_path, grid)
    with pytest.raises(runfiles.RunFileError, match="expected 7 steps, found 6"):
        summary.summarize_cells(paths, pattern, 7, tmp_path / "summary")


def test_confidence_interval_of_two_runs_uses_one_degree_of_freedom(tmp_path):
    values = {("mse", "sgd"): np.array([[1.0, 2.0], [3.0, 7.0]])}
    table, _ = summarize(tmp_path, values)
    last = table[table["step"] == 1].iloc[0]
    low, high = stats.t.interval(0.95, 1, loc=4.5, scale=stats.sem([2.0, 7.0]))
    assert (last["ci95_low"], last["ci95_high"]) == (pytest.approx(low), pytest.approx(high))
    # the step table says how: t with 1 df, and no median interval from two runs
    assert last["ci_method"] == (
        "ci95: t (for the record); geo: t on log10 (1 df; if log-normal); median: n too small (< 6)"
    )


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
