"""The float32 resolution floor: its rule, and ties at it in every comparison."""

import json

import numpy as np
import pandas as pd
import pytest

from optbench import runfiles
from optbench.reporting import cells, comparison, resolution

EPSILON = 2.0**-23  # float32's relative spacing, written out


@pytest.mark.parametrize(
    ("loss_class", "power"),
    [
        ("MSELoss", 2),
        ("HuberLoss", 2),
        ("SmoothL1Loss", 2),
        (None, 2),  # an objective
        ("L1Loss", 1),
        ("CrossEntropyLoss", 1),
        ("BCEWithLogitsLoss", 1),
        ("NLLLoss", 1),
    ],
)
def test_floor_is_epsilon_to_the_power_times_the_initial_loss(loss_class, power):
    initial = np.array([4.0, 0.5, np.nan])
    floors = resolution.floors(initial, loss_class)
    assert floors[0] == EPSILON**power * 4.0 and floors[1] == EPSILON**power * 0.5
    assert np.isnan(floors[2])


def write_cell(root, optimizer, finals, loss_class="MSELoss", initial=9.0):
    """Runs of one cell whose last loss is each of ``finals`` (seed = position)."""
    paths = []
    for seed, final in enumerate(finals):
        tsv = root / f"linear/mse/{optimizer}/base/seed{seed}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        loss = None if loss_class is None else {"class": loss_class}
        runfiles.write_run(tsv, [initial, 1.0, final], tsv.with_suffix(".json"), {"loss": loss})
        paths.append(str(tsv))
    return paths


PATTERN = "{root}/{problem}/{loss}/{optimizer}/{variant}/seed{seed}.tsv"


def summarized(root, optimizer, finals, **kwargs):
    paths = write_cell(root, optimizer, finals, **kwargs)
    identity = {"problem": "linear", "loss": "mse", "optimizer": optimizer, "variant": "base"}
    cell = cells.read_cell(paths, PATTERN.replace("{root}", str(root)), identity, 3)
    return cell, cells.run_table(cell)


def test_a_cell_reads_its_loss_from_the_sidecars_and_ties_runs_below_the_floor(tmp_path):
    floor = EPSILON**2 * 9.0  # MSE: epsilon squared x the initial loss 9
    cell, table = summarized(tmp_path, "a", [1e-16, floor, 1e-9])
    assert cell.loss_class == "MSELoss"
    assert table["resolution_floor"] == [floor] * 3
    assert table["at_floor"] == [1.0, 1.0, 0.0]
    assert table["final_loss"] == [floor, floor, 1e-9]  # raised to the floor, else as recorded
    assert table["best_loss"] == [floor, floor, 1e-9]
    # L1: epsilon to the first power, so 1e-9 is below it too
    _, l1 = summarized(tmp_path / "l1", "a", [1e-16, 1e-9, 1e-3], loss_class="L1Loss")
    assert l1["resolution_floor"] == [EPSILON * 9.0] * 3 and l1["at_floor"] == [1.0, 1.0, 0.0]


def test_runs_without_a_loss_in_their_sidecar_get_no_floor(tmp_path):
    paths = write_cell(tmp_path, "a", [1e-16, 1e-9])
    for path in paths:
        sidecar = cells.sidecar_path(path)
        with open(sidecar) as handle:
            metadata = json.load(handle)
        metadata.pop("loss")
        with open(sidecar, "w") as handle:
            json.dump(metadata, handle)
    identity = {"problem": "linear", "loss": "mse", "optimizer": "a", "variant": "base"}
    cell = cells.read_cell(paths, PATTERN.replace("{root}", str(tmp_path)), identity, 3)
    table = cells.run_table(cell)
    assert table["final_loss"] == [1e-16, 1e-9] and table["at_floor"] == [0.0, 0.0]


def test_two_optimizers_below_the_floor_tie_in_the_paired_comparison(tmp_path):
    """A planted case: b beats a by 1-3 decades on every seed, but all of it below
    float32's resolution. Before the floor this was a win; now it is a tie."""
    a_finals = [1e-14, 3e-15, 2e-14, 5e-15, 1e-14, 8e-15, 4e-15, 2e-14]
    b_finals = [v / 10 ** (1 + seed % 3) for seed, v in enumerate(a_finals)]
    rows = []
    for name, finals in (("a", a_finals), ("b", b_finals)):
        _, table = summarized(tmp_path / name, name, finals)
        rows.append(pd.DataFrame(table).assign(problem="linear", loss="mse", optimizer=name))
    runs = pd.concat(rows, ignore_index=True)
    assert runs["at_floor"].all()
    pairs = comparison.pairwise_table(runs)
    assert (pairs["median_diff"] == 0).all()
    assert set(comparison.ranking_table(runs, pairs)["rank"]) == {1}
    # The raw losses would have separated them: the floor is what ties them.
    raw = runs.assign(final_loss=[*a_finals, *b_finals])
    assert list(comparison.ranking_table(raw)["rank"]) == [1, 2]
