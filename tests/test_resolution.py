"""The float32 resolution floor: its rule, and ties at it in every comparison."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from optbench import problems, runfiles
from optbench.planning import torch_catalog
from optbench.reporting import cells, comparison, resolution

EPSILON = 2.0**-23  # float32's relative spacing, written out


# The floor's power for every torch.nn loss class, classified by hand from how
# each computes its value near its minimum (resolution.py states the rule): 2
# where the loss is a square of the residual, 1 where it is linear in it (L1,
# the hinges) or a likelihood (a log rounds to 0 below epsilon, and a sum of
# log terms cancels to epsilon x its scale). A class torch adds later is not
# here: the test below then fails and names it, so it cannot go unclassified.
HAND_POWERS = {
    None: 2,  # an objective, smooth at its optimum
    "MSELoss": 2,
    "HuberLoss": 2,  # quadratic below delta
    "SmoothL1Loss": 2,  # quadratic below beta
    "GaussianNLLLoss": 2,  # its (input - target)**2 / var term
    "L1Loss": 1,
    "HingeEmbeddingLoss": 1,
    "MarginRankingLoss": 1,
    "MultiMarginLoss": 1,  # p=1 by default: the plain hinge
    "MultiLabelMarginLoss": 1,
    "SoftMarginLoss": 1,  # log(1 + exp(-y x))
    "CosineEmbeddingLoss": 1,  # 1 - cos: a difference from 1, resolved to epsilon
    "TripletMarginLoss": 1,  # a hinge on distances
    "TripletMarginWithDistanceLoss": 1,
    "CrossEntropyLoss": 1,
    "LinearCrossEntropyLoss": 1,
    "NLLLoss": 1,
    "NLLLoss2d": 1,
    "BCELoss": 1,
    "BCEWithLogitsLoss": 1,
    "MultiLabelSoftMarginLoss": 1,
    "KLDivLoss": 1,
    "PoissonNLLLoss": 1,
    "CTCLoss": 1,
}


def accepted_losses() -> list[str | None]:
    """What a config's ``losses.*.class`` may name: every torch.nn loss class, the one
    list config checking reads (planning.torch_catalog), and None (an objective)."""
    catalog = torch_catalog.load()
    assert catalog is not None, "torch's source could not be read: no list of loss classes"
    return [None, *sorted(catalog.losses)]


def test_the_accepted_losses_include_every_loss_a_problem_can_train():
    trainable = {name for names in problems.LOSSES.values() for name in names}
    assert trainable <= set(accepted_losses())
    assert "GaussianNLLLoss" in accepted_losses()


@pytest.mark.parametrize("loss_class", accepted_losses(), ids=str)
def test_floor_is_epsilon_to_the_power_times_the_initial_loss(loss_class):
    assert loss_class in HAND_POWERS, (
        f"torch.nn.{loss_class} has no floor power in HAND_POWERS: classify it "
        "(2: quadratic in the residual near its minimum, 1: linear or a likelihood)"
    )
    power = HAND_POWERS[loss_class]
    initial = np.array([4.0, 0.5, np.nan])
    floors = resolution.floors(initial, loss_class)
    assert floors[0] == EPSILON**power * 4.0 and floors[1] == EPSILON**power * 0.5
    assert np.isnan(floors[2])


def residual_order(loss: torch.nn.Module, *extra) -> float:
    """The order p of ``loss`` in the residual r near r = 0 (loss ~ r**p), measured in
    float64: log2 of the loss at 2h over the loss at h."""
    target = torch.zeros(8, dtype=torch.float64)
    h = 1e-4
    at = [float(loss(target + step, target, *extra)) for step in (h, 2 * h)]
    return math.log2(at[1] / at[0])


@pytest.mark.parametrize(
    ("loss", "kwargs", "extra"),
    [
        ("MSELoss", {}, ()),
        ("L1Loss", {}, ()),
        ("HuberLoss", {}, ()),
        ("SmoothL1Loss", {}, ()),
        ("SmoothL1Loss", {"beta": 0.0}, ()),  # torch: then it is L1Loss
        ("GaussianNLLLoss", {}, (torch.ones(8, dtype=torch.float64),)),  # var = 1
    ],
)
def test_a_residual_loss_has_the_power_of_its_order_in_the_residual(loss, kwargs, extra):
    """For the losses of a residual, p is the loss's order in it near 0, measured on
    torch's own loss: 2 for GaussianNLLLoss, whose floor is epsilon**2 (1e-14 x its
    initial loss), not epsilon (1e-7 x it)."""
    measured = residual_order(getattr(torch.nn, loss)(**kwargs), *extra)
    assert resolution.power(loss, kwargs) == round(measured)
    assert measured == pytest.approx(round(measured), abs=1e-3)


def test_the_squared_hinge_has_power_two():
    """MultiMarginLoss(p=2) squares the margin's shortfall s: measured, the loss goes as
    s**2, as the plain hinge (p=1) goes as s."""
    target = torch.tensor([0])
    for p in (1, 2):
        loss = torch.nn.MultiMarginLoss(p=p)
        # class 0 leads by 1 - s: the shortfall from the margin 1 is s
        at = [
            float(loss(torch.tensor([[1.0 - s, 0.0]], dtype=torch.float64), target))
            for s in (1e-4, 2e-4)
        ]
        assert round(math.log2(at[1] / at[0])) == p == resolution.power("MultiMarginLoss", {"p": p})


def write_cell(root, optimizer, finals, loss_class="MSELoss", initial=9.0, loss_kwargs=None):
    """Runs of one cell whose last loss is each of ``finals`` (seed = position);
    ``loss_kwargs``: the loss's kwargs in each run's sidecar (one dict, or one per run)."""
    paths = []
    for seed, final in enumerate(finals):
        tsv = root / f"linear/mse/{optimizer}/base/seed{seed}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        kwargs = loss_kwargs[seed] if isinstance(loss_kwargs, list) else loss_kwargs or {}
        loss = None if loss_class is None else {"class": loss_class, "kwargs": kwargs}
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


def test_a_cell_reads_the_kwargs_that_change_a_losses_floor_from_the_sidecars(tmp_path):
    # SmoothL1Loss with beta 0 is L1Loss: epsilon to the first power, so 1e-9 ties.
    cell, table = summarized(
        tmp_path, "a", [1e-9, 1e-3], loss_class="SmoothL1Loss", loss_kwargs={"beta": 0.0}
    )
    assert cell.loss_kwargs == {"beta": 0.0}
    assert table["resolution_floor"] == [EPSILON * 9.0] * 2 and table["at_floor"] == [1.0, 0.0]
    _, default = summarized(tmp_path / "d", "a", [1e-9, 1e-3], loss_class="SmoothL1Loss")
    assert default["resolution_floor"] == [EPSILON**2 * 9.0] * 2
    # runs of one cell with two settings of the loss cannot share a floor: refused
    with pytest.raises(cells.CellError, match="different losses.*Delete the runs"):
        summarized(
            tmp_path / "mixed",
            "a",
            [1e-9, 1e-3],
            loss_class="SmoothL1Loss",
            loss_kwargs=[{"beta": 0.0}, {}],
        )


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
