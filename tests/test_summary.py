"""Summary statistics checked against numpy and scipy computed from the TSVs."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from optbench import runfiles, summary


def write_grid(root, values):
    """values: {(loss, optimizer): array seeds x steps} -> RunRefs in that order."""
    runs = []
    for (loss, optimizer), array in values.items():
        for seed, row in enumerate(array):
            path = root / loss / optimizer / f"seed{seed}.tsv"
            runfiles.write_text_atomic(path, runfiles.format_losses(row))
            runs.append(summary.RunRef(loss, optimizer, seed, str(path)))
    return runs


@pytest.fixture
def grid(tmp_path):
    rng = np.random.default_rng(42)
    values = {
        ("mse", "adam"): rng.lognormal(size=(7, 6)),
        ("mse", "sgd"): rng.lognormal(size=(7, 6)) + 1.0,
        ("l1", "adam"): rng.normal(loc=2.0, size=(7, 6)),
        ("l1", "sgd"): rng.normal(loc=1.0, size=(7, 6)),
    }
    return values, write_grid(tmp_path / "runs", values)


def test_step_statistics_match_numpy_and_scipy(tmp_path, grid):
    values, runs = grid
    summary.summarize(runs, 6, tmp_path / "steps.tsv", tmp_path / "board.tsv")
    table = pd.read_csv(tmp_path / "steps.tsv", sep="\t")
    assert list(table.columns) == summary.STEP_COLUMNS
    assert len(table) == 4 * 6
    for (loss, optimizer), array in values.items():
        rows = table[(table["loss"] == loss) & (table["optimizer"] == optimizer)]
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
    values, runs = grid
    summary.summarize(runs, 6, tmp_path / "steps.tsv", tmp_path / "board.tsv")
    board = pd.read_csv(tmp_path / "board.tsv", sep="\t")
    assert len(board) == 4 and "step" not in board.columns
    for loss in ("mse", "l1"):
        rows = board[board["loss"] == loss].set_index("optimizer")
        finals = {opt: values[(loss, opt)][:, -1] for opt in ("adam", "sgd")}
        best = min(finals, key=lambda opt: finals[opt].mean())
        other = "sgd" if best == "adam" else "adam"
        assert rows.loc[best, "rank"] == 1 and rows.loc[other, "rank"] == 2
        assert rows.loc[other, "mean"] == pytest.approx(finals[other].mean(), rel=1e-12)
        expected_p = stats.ttest_rel(finals[best], finals[other]).pvalue
        assert rows.loc[other, "p_vs_best"] == pytest.approx(expected_p, rel=1e-9)
        assert math.isnan(rows.loc[best, "p_vs_best"])


def test_diverged_runs_are_counted_and_excluded_from_statistics(tmp_path):
    finite = np.array([[4.0, 3.0, 2.0, 1.0], [5.0, 4.0, 3.0, 2.0], [6.0, 5.0, 4.0, 3.0]])
    blowing_up = np.array([[4.0, 1e30, math.inf, math.nan], [2.0, math.nan, math.nan, math.nan]])
    values = {
        ("mse", "ok"): finite,
        ("mse", "wild"): np.vstack([finite[:1], blowing_up]),
        ("mse", "dead"): np.full((2, 4), math.nan),
    }
    runs = write_grid(tmp_path / "runs", values)
    summary.summarize(runs, 4, tmp_path / "steps.tsv", tmp_path / "board.tsv")
    table = pd.read_csv(tmp_path / "steps.tsv", sep="\t")
    wild = table[table["optimizer"] == "wild"].set_index("step")
    assert list(wild["n"]) == [3, 3, 3, 3]
    assert list(wild["n_diverged"]) == [0, 1, 2, 2]
    assert list(wild["n_finite"]) == [3, 2, 1, 1]
    assert wild.loc[0, "mean"] == pytest.approx(np.mean([4.0, 4.0, 2.0]))
    assert wild.loc[1, "mean"] == pytest.approx(np.mean([3.0, 1e30]))
    assert wild.loc[3, "mean"] == 1.0 and math.isnan(wild.loc[3, "var"])
    dead = table[table["optimizer"] == "dead"]
    assert dead["mean"].isna().all() and (dead["n_diverged"] == 2).all()
    board = pd.read_csv(tmp_path / "board.tsv", sep="\t").set_index("optimizer")
    assert board.loc["wild", "rank"] == 1  # mean 1.0 over the one surviving run
    assert board.loc["ok", "rank"] == 2
    assert board.loc["dead", "rank"] == 3  # all diverged: last


def test_surviving_masks_from_first_nonfinite_step():
    data = np.array([[1.0, math.inf, 2.0], [1.0, 2.0, 3.0]])
    masked = summary.surviving(data)
    assert masked[0, 0] == 1.0 and np.isnan(masked[0, 1:]).all()
    assert list(masked[1]) == [1.0, 2.0, 3.0]


def test_malformed_run_stops_aggregation_with_file_and_line(tmp_path, grid):
    _, runs = grid
    bad = runs[3].path
    with open(bad, "a") as handle:
        handle.write("6\tnot-a-number\n")
    with pytest.raises(
        runfiles.RunFileError, match=f"{bad}:8: loss .not-a-number. is not a number"
    ):
        summary.summarize(runs, 6, tmp_path / "steps.tsv", tmp_path / "board.tsv")
    assert not (tmp_path / "steps.tsv").exists()
