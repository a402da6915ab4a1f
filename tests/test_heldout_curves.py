"""eval_every: held-out metrics every k steps, in eval mode, untimed, equal across engines."""

import json
import subprocess
import sys

import pytest
import torch

import optbench.problems as problems
from conftest import TRAIN_SCRIPT
from optbench.engines import batched, training


def hand_curve(name, seed, steps, at, lr=0.01, criterion=None):
    """The plain loop, evaluating the held-out data by hand after the listed steps."""
    instance = problems.build(name, seed, steps, {})
    optimizer = torch.optim.Adam(instance.model.parameters(), lr=lr)
    curve = []
    for step in range(steps):
        optimizer.zero_grad()
        instance.loss(criterion, *instance.batch(step)).backward()
        optimizer.step()
        if step + 1 in at:
            curve.append({"step": step + 1, **instance.evaluate(criterion)})
    return curve


def test_evaluation_steps_are_every_k_and_the_last():
    assert training.evaluation_steps(12, 5) == {5, 10, 12}
    assert training.evaluation_steps(10, 5) == {5, 10}
    assert training.evaluation_steps(10, 0) == set()
    assert training.evaluation_steps(3, 7) == {3}


@pytest.mark.parametrize(
    ("name", "loss"),
    [
        ("breast_cancer_mlp", torch.nn.BCEWithLogitsLoss()),
        ("digits_mlp", torch.nn.CrossEntropyLoss()),
    ],
)
def test_both_engines_record_the_hand_loops_curve(name, loss):
    expected = [hand_curve(name, seed, 12, {5, 10, 12}, criterion=loss) for seed in (0, 1, 2)]
    loop = batched.train_loop(
        [problems.build(name, s, 12, {}) for s in (0, 1, 2)], loss, "Adam", {"lr": 0.01}, 12,
        eval_every=5,
    )  # fmt: skip
    assert [run.curve for run in loop] == expected
    together = batched.train_batched(
        [problems.build(name, s, 12, {}) for s in (0, 1, 2)], loss, "Adam", {"lr": 0.01}, 12,
        eval_every=5,
    )  # fmt: skip
    assert together.engine == "batched"
    assert [run.curve for run in together.runs] == expected  # the same weights, the same bits


def test_a_problem_without_held_out_data_records_no_curve():
    runs = batched.train_loop(
        [problems.build("linear", 0, 6, {})], torch.nn.MSELoss(), "SGD", {"lr": 0.1}, 6,
        eval_every=2,
    )  # fmt: skip
    assert runs[0].curve == []


def test_schedule_free_is_evaluated_at_its_evaluation_point_and_trains_on():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    criterion = torch.nn.CrossEntropyLoss()
    instance = problems.build("digits_mlp", 0, 8, {})
    optimizer = pytorch_optimizer.ScheduleFreeAdamW(instance.model.parameters(), lr=0.01)
    looped = training.train_instance(instance, criterion, optimizer, 8, eval_every=4)
    # By hand: train mode for the steps, eval mode for each evaluation.
    twin = problems.build("digits_mlp", 0, 8, {})
    hand = pytorch_optimizer.ScheduleFreeAdamW(twin.model.parameters(), lr=0.01)
    hand.train()
    expected = []
    for step in range(8):
        hand.zero_grad()
        twin.loss(criterion, *twin.batch(step)).backward()
        hand.step()
        if step + 1 in (4, 8):
            hand.eval()
            expected.append({"step": step + 1, **twin.evaluate(criterion)})
            hand.train()
    assert looped.curve == expected
    # Switched back after each evaluation: the steps after it train at the
    # training point, as the hand loop's do (the loop ends in eval mode).
    hand.eval()
    weights = zip(instance.model.parameters(), twin.model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)


def test_the_training_job_writes_the_curve_into_the_sidecar(tmp_path):
    spec = {
        "problem": {
            "name": "cancer",
            "problem": "breast_cancer_mlp",
            "kind": "binary",
            "kwargs": {"hidden": 16, "batch_size": 32, "heldout_fraction": 0.2},
        },
        "optimizer": {"name": "adam", "class": "Adam", "kwargs": {"lr": 0.01}},
        "loss": {"name": "bce", "class": "BCEWithLogitsLoss", "kwargs": {}},
        "variant": "base",
        "steps": 12,
        "device": "cpu",
        "eval_every": 5,
    }
    command = [sys.executable, str(TRAIN_SCRIPT), "--spec", json.dumps(spec)]
    runs = []
    for seed in (0, 1):
        runs += [
            "--run",
            str(seed),
            str(tmp_path / f"seed{seed}.tsv"),
            str(tmp_path / f"s{seed}.json"),
        ]
    process = subprocess.run([*command, *runs], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    for seed in (0, 1):
        meta = json.loads((tmp_path / f"s{seed}.json").read_text())
        expected = hand_curve(
            "breast_cancer_mlp", seed, 12, {5, 10, 12}, criterion=torch.nn.BCEWithLogitsLoss()
        )
        assert meta["heldout_curve"] == expected
        assert meta["heldout"] == {k: v for k, v in expected[-1].items() if k != "step"}
        assert meta["eval_every"] == 5
